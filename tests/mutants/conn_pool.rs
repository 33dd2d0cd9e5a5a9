//! Buggy connection pools that the suite must reject: the reference's design (one
//! mutex, a FIFO queue of oneshot waiters, self-returning hand-offs) with every bug a
//! named switch, read from the const parameter at construction. `Flawed<_, NONE>`
//! passes the whole suite; `Flawed<_, B>` must be rejected by the case [`mutants`]
//! names for it.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::time::Duration;

use harness::clock::{SharedTimer, Timestamp};
use harness::conn_pool::{ConfigError, ConnPool, Connector, PoolConfig, PoolError, PoolStats};
use tokio::sync::oneshot;

pub const NONE: u8 = 0;
/// Waiters served last come, first served (pushed at the front of the queue).
pub const LIFO_WAITERS: u8 = 1;
/// No deadline at all: a waiter waits until a connection comes, however long.
pub const TIMEOUT_IGNORED: u8 = 2;
/// The timeout is put around the wait only; a connect that hangs hangs the get().
pub const CONNECT_NOT_BOUNDED: u8 = 3;
/// A failed connect forgets to free its slot.
pub const CONNECT_ERROR_LEAKS_SLOT: u8 = 4;
/// `in_use` counts the slots of connects in flight as connections in use.
pub const IN_USE_COUNTS_OPENING: u8 = 5;
/// `total_waits` counts every get(), not only those that queued.
pub const TOTAL_WAITS_COUNTS_ALL: u8 = 6;
/// `slots <= max_size`: one connection too many.
pub const OVER_MAX_BY_ONE: u8 = 7;
/// The deadline is one millisecond late (`>` where `>=` was meant).
pub const TIMEOUT_ONE_MS_LATE: u8 = 8;
/// Idle connections are handed out without validation.
pub const NO_VALIDATION: u8 = 9;
/// A connection handed straight to a waiter is not validated.
pub const HANDOFF_NOT_VALIDATED: u8 = 10;
/// The lifetime counts from the last return, not from the opening.
pub const LIFETIME_FROM_LAST_USE: u8 = 11;
/// The idle timeout is never applied.
pub const IDLE_TIMEOUT_IGNORED: u8 = 12;
/// min_idle is filled at construction only, never replenished.
pub const MIN_IDLE_NOT_REPLENISHED: u8 = 13;
/// Idle connections are taken oldest first (FIFO) although the contract says LIFO.
pub const IDLE_FIFO: u8 = 14;
/// A broken idle connection is closed but its slot is never freed (the pool shrinks).
pub const BROKEN_DISCARD_LEAKS_SLOT: u8 = 15;
/// A connection returned past its lifetime is kept idle (the next sweep closes it).
pub const EXPIRED_RETURN_KEPT: u8 = 16;
/// A hand-off is a bare connection: if the waiter is cancelled before it runs, the
/// connection is closed with the channel and its slot is lost.
pub const CANCEL_LOSES_HANDOFF: u8 = 17;
/// A cancelled waiter is not removed from the queue (no drop guard): it stays counted.
pub const CANCELLED_STAYS_QUEUED: u8 = 18;
/// Check-then-act: checks for room, connects, and only then takes the slot.
pub const CHECK_THEN_ACT: u8 = 19;
/// A guard dropped while its holder panics closes the connection ("it may be in a bad
/// state") but forgets to free the slot.
pub const PANIC_LEAKS_SLOT: u8 = 20;
/// The slot of a connect is freed only when the connect fails, not when the get() is
/// dropped (timed out or cancelled) mid-connect.
pub const ABANDONED_CONNECT_LEAKS: u8 = 21;
/// HikariCP's aliveBypassWindow done wrong: a connection returned less than 500ms ago
/// is handed out unvalidated.
pub const VALIDATION_BYPASS_WINDOW: u8 = 22;
/// Connect errors retried until one succeeds, ignoring the deadline (a retry loop
/// outside the timeout).
pub const RETRY_CONNECT_FOREVER: u8 = 23;

pub struct Flawed<C: Connector, const BUG: u8> {
    shared: Arc<Shared<C>>,
}

struct Shared<C: Connector> {
    bug: u8,
    connector: C,
    config: PoolConfig,
    timer: SharedTimer,
    state: Mutex<State<C>>,
}

/// An open connection and when it was opened (for `max_lifetime`).
struct Live<T> {
    conn: T,
    opened: Timestamp,
}

struct Idle<T> {
    live: Live<T>,
    idle_since: Timestamp,
}

struct State<C: Connector> {
    /// Bottom to top: checkout pops the most recently returned (LIFO).
    idle: Vec<Idle<C::Conn>>,
    /// Connections open or being opened: never above `max_size`.
    slots: usize,
    /// Slots held without a connection: connects in flight, slots handed to waiters.
    opening: usize,
    /// Top-up connects in flight (they count toward `min_idle`).
    topping: usize,
    waiters: VecDeque<Waiter<C>>,
    next_waiter: u64,
    total_waits: u64,
}

struct Waiter<C: Connector> {
    id: u64,
    tx: oneshot::Sender<Handoff<C>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking holder never holds this lock (no user code runs under it).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<C: Connector> Shared<C> {
    fn expired(&self, opened: Timestamp, now: Timestamp) -> bool {
        now >= opened + self.config.max_lifetime
    }

    /// Takes the expired idle connections out (the caller drops them outside the lock)
    /// and frees their slots.
    fn sweep(self: &Arc<Self>, state: &mut State<C>, now: Timestamp) -> Vec<Idle<C::Conn>> {
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut state.idle).into_iter().partition(|i| {
            self.expired(i.live.opened, now)
                || (self.bug != IDLE_TIMEOUT_IGNORED && now >= i.idle_since + self.config.idle_timeout)
        });
        state.idle = kept;
        for _ in &expired {
            self.free_slot(state);
        }
        expired
    }

    /// A slot no longer holds a connection: the head waiter gets it (and connects),
    /// else it is free.
    fn free_slot(self: &Arc<Self>, state: &mut State<C>) {
        state.opening += 1;
        let mut handoff = Handoff { shared: self.clone(), what: Some(Given::Slot) };
        while let Some(waiter) = state.waiters.pop_front() {
            match waiter.tx.send(handoff) {
                Ok(()) => return,
                Err(back) => handoff = back,
            }
        }
        handoff.what = None;
        state.opening -= 1;
        state.slots -= 1;
    }

    /// A connection comes back (a guard dropped, a top-up landed, a hand-off refused).
    fn give_back(self: &Arc<Self>, live: Live<C::Conn>) {
        let now = self.timer.now();
        let mut closing = Vec::new();
        {
            let mut state = lock(&self.state);
            closing.extend(self.sweep(&mut state, now).into_iter().map(|i| i.live));
            if self.bug != EXPIRED_RETURN_KEPT && self.expired(live.opened, now) {
                closing.push(live);
                self.free_slot(&mut state);
            } else {
                let mut handoff = Handoff { shared: self.clone(), what: Some(Given::Conn(live)) };
                loop {
                    let Some(waiter) = state.waiters.pop_front() else {
                        if let Some(Given::Conn(mut live)) = handoff.what.take() {
                            if self.bug == LIFETIME_FROM_LAST_USE {
                                live.opened = now;
                            }
                            state.idle.push(Idle { live, idle_since: now });
                        }
                        break;
                    };
                    match waiter.tx.send(handoff) {
                        Ok(()) => break,
                        Err(back) => handoff = back,
                    }
                }
            }
        }
        drop(closing);
        self.replenish();
    }

    /// The top-up after a checkout or a return.
    fn replenish(self: &Arc<Self>) {
        if self.bug != MIN_IDLE_NOT_REPLENISHED {
            self.top_up();
        }
    }

    /// Opens connections in the background until `idle + top-ups in flight` reaches
    /// `min_idle`, while slots are free.
    fn top_up(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let mut state = lock(&self.state);
        while state.idle.len() + state.topping < self.config.min_idle && state.slots < self.config.max_size {
            state.slots += 1;
            state.opening += 1;
            state.topping += 1;
            let slot = Slot { shared: self.clone(), topping: true };
            runtime.spawn(async move {
                let shared = slot.shared.clone();
                let connect = shared.connector.connect();
                let opened = tokio::select! {
                    biased;
                    () = shared.timer.sleep(shared.config.checkout_timeout) => None,
                    result = connect => result.ok(),
                };
                // On failure or timeout the slot's Drop frees it (no retry: the next
                // checkout or return tries again).
                if let Some(conn) = opened {
                    let live = Live { conn, opened: shared.timer.now() };
                    slot.into_connection();
                    shared.give_back(live);
                }
            });
        }
    }
}

/// What a waiter is handed.
enum Given<T> {
    Conn(Live<T>),
    /// A free slot: the waiter connects with it.
    Slot,
}

/// A hand-off in flight to a waiter: if it is dropped unopened (the waiter was
/// cancelled), it gives its connection or slot back to the pool.
struct Handoff<C: Connector> {
    shared: Arc<Shared<C>>,
    what: Option<Given<C::Conn>>,
}

impl<C: Connector> Drop for Handoff<C> {
    fn drop(&mut self) {
        if self.shared.bug == CANCEL_LOSES_HANDOFF {
            // The bare connection closes with the channel; nobody frees its slot.
            return;
        }
        match self.what.take() {
            Some(Given::Conn(live)) => self.shared.give_back(live),
            Some(Given::Slot) => drop(Slot { shared: self.shared.clone(), topping: false }),
            None => {}
        }
    }
}

/// A slot reserved for a connect: freed on drop unless it became a connection.
struct Slot<C: Connector> {
    shared: Arc<Shared<C>>,
    topping: bool,
}

impl<C: Connector> Slot<C> {
    /// The connect succeeded: the slot now holds a connection (owned elsewhere).
    fn into_connection(self) {
        let mut state = lock(&self.shared.state);
        state.opening -= 1;
        if self.topping {
            state.topping -= 1;
        }
        drop(state);
        std::mem::forget(self);
    }
}

impl<C: Connector> Drop for Slot<C> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.opening -= 1;
        if self.topping {
            state.topping -= 1;
        }
        self.shared.free_slot(&mut state);
    }
}

/// A checked-out connection; dropping it (also while unwinding) returns it.
pub struct Guard<C: Connector> {
    shared: Arc<Shared<C>>,
    live: Option<Live<C::Conn>>,
}

impl<C: Connector> Guard<C> {
    /// Closes the connection but keeps its slot (to connect a replacement).
    fn close_keeping_slot(mut self) -> Slot<C> {
        drop(self.live.take());
        lock(&self.shared.state).opening += 1;
        Slot { shared: self.shared.clone(), topping: false }
    }
}

impl<C: Connector> Deref for Guard<C> {
    type Target = C::Conn;
    fn deref(&self) -> &C::Conn {
        &self.live.as_ref().expect("a guard holds its connection until dropped").conn
    }
}

impl<C: Connector> DerefMut for Guard<C> {
    fn deref_mut(&mut self) -> &mut C::Conn {
        &mut self.live.as_mut().expect("a guard holds its connection until dropped").conn
    }
}

impl<C: Connector> Drop for Guard<C> {
    fn drop(&mut self) {
        if self.shared.bug == PANIC_LEAKS_SLOT && std::thread::panicking() {
            drop(self.live.take());
            return;
        }
        if let Some(live) = self.live.take() {
            self.shared.give_back(live);
        }
    }
}

/// Removes a waiter from the queue when its get() ends or is dropped.
struct Queued<'a, C: Connector> {
    shared: &'a Shared<C>,
    id: u64,
}

impl<C: Connector> Drop for Queued<'_, C> {
    fn drop(&mut self) {
        if self.shared.bug == CANCELLED_STAYS_QUEUED {
            return;
        }
        lock(&self.shared.state).waiters.retain(|w| w.id != self.id);
    }
}

/// What a checkout found under the lock.
enum Found<C: Connector> {
    Idle(Guard<C>, Timestamp),
    Room(Slot<C>),
    Wait(oneshot::Receiver<Handoff<C>>, u64),
    /// CHECK_THEN_ACT: there was room when we looked.
    Unreserved,
}

impl<C: Connector, const BUG: u8> Flawed<C, BUG> {
    fn find(&self) -> Found<C> {
        let shared = &self.shared;
        let now = shared.timer.now();
        let mut state = lock(&shared.state);
        let expired = shared.sweep(&mut state, now);
        if BUG == TOTAL_WAITS_COUNTS_ALL {
            state.total_waits += 1;
        }
        let popped =
            if BUG == IDLE_FIFO && !state.idle.is_empty() { Some(state.idle.remove(0)) } else { state.idle.pop() };
        let room = if BUG == OVER_MAX_BY_ONE {
            state.slots <= shared.config.max_size
        } else {
            state.slots < shared.config.max_size
        };
        let found = if let Some(idle) = popped {
            Found::Idle(Guard { shared: shared.clone(), live: Some(idle.live) }, idle.idle_since)
        } else if room && BUG == CHECK_THEN_ACT {
            Found::Unreserved
        } else if room {
            state.slots += 1;
            state.opening += 1;
            Found::Room(Slot { shared: shared.clone(), topping: false })
        } else {
            let (tx, rx) = oneshot::channel();
            let id = state.next_waiter;
            state.next_waiter += 1;
            if BUG != TOTAL_WAITS_COUNTS_ALL {
                state.total_waits += 1;
            }
            if BUG == LIFO_WAITERS {
                state.waiters.push_front(Waiter { id, tx });
            } else {
                state.waiters.push_back(Waiter { id, tx });
            }
            Found::Wait(rx, id)
        };
        drop(state);
        drop(expired);
        found
    }

    async fn connect(&self, slot: Slot<C>) -> Result<Guard<C>, PoolError> {
        if BUG == RETRY_CONNECT_FOREVER {
            loop {
                if let Ok(conn) = self.shared.connector.connect().await {
                    let live = Live { conn, opened: self.shared.timer.now() };
                    slot.into_connection();
                    return Ok(Guard { shared: self.shared.clone(), live: Some(live) });
                }
                self.shared.timer.sleep(Duration::from_millis(10)).await;
            }
        }
        if BUG == CONNECT_ERROR_LEAKS_SLOT || BUG == ABANDONED_CONNECT_LEAKS {
            let slot = std::mem::ManuallyDrop::new(slot);
            return match self.shared.connector.connect().await {
                Ok(conn) => {
                    let live = Live { conn, opened: self.shared.timer.now() };
                    std::mem::ManuallyDrop::into_inner(slot).into_connection();
                    Ok(Guard { shared: self.shared.clone(), live: Some(live) })
                }
                Err(e) => {
                    if BUG == ABANDONED_CONNECT_LEAKS {
                        drop(std::mem::ManuallyDrop::into_inner(slot));
                    }
                    Err(PoolError::Connect(e))
                }
            };
        }
        // If this future is dropped mid-connect, `slot` frees itself.
        let conn = self.shared.connector.connect().await.map_err(PoolError::Connect)?;
        let live = Live { conn, opened: self.shared.timer.now() };
        slot.into_connection();
        Ok(Guard { shared: self.shared.clone(), live: Some(live) })
    }

    async fn checkout(&self) -> Result<Guard<C>, PoolError> {
        loop {
            match self.find() {
                Found::Idle(mut guard, idle_since) => {
                    if BUG == NO_VALIDATION {
                        return Ok(guard);
                    }
                    let idle_for = self.shared.timer.now().saturating_duration_since(idle_since);
                    if BUG == VALIDATION_BYPASS_WINDOW && idle_for < Duration::from_millis(500) {
                        return Ok(guard);
                    }
                    if self.shared.connector.is_valid(&mut *guard).await {
                        return Ok(guard);
                    }
                    let slot = guard.close_keeping_slot();
                    if BUG == BROKEN_DISCARD_LEAKS_SLOT {
                        std::mem::forget(slot);
                    } else {
                        drop(slot);
                    }
                }
                Found::Unreserved => {
                    let conn = self.shared.connector.connect().await.map_err(PoolError::Connect)?;
                    let live = Live { conn, opened: self.shared.timer.now() };
                    lock(&self.shared.state).slots += 1;
                    return Ok(Guard { shared: self.shared.clone(), live: Some(live) });
                }
                Found::Room(slot) => return self.connect(slot).await,
                Found::Wait(rx, id) => {
                    let _queued = Queued { shared: &self.shared, id };
                    let received = if BUG == CONNECT_NOT_BOUNDED || BUG == RETRY_CONNECT_FOREVER {
                        // The timeout around the wait only.
                        tokio::select! {
                            biased;
                            () = self.shared.timer.sleep(self.shared.config.checkout_timeout) => return Err(PoolError::Timeout),
                            received = rx => received,
                        }
                    } else {
                        rx.await
                    };
                    let Ok(mut handoff) = received else {
                        unreachable!("a waiter is only dropped from the queue by sending to it or by itself")
                    };
                    match handoff.what.take() {
                        Some(Given::Conn(live)) => {
                            let mut guard = Guard { shared: self.shared.clone(), live: Some(live) };
                            if BUG == HANDOFF_NOT_VALIDATED || self.shared.connector.is_valid(&mut *guard).await {
                                return Ok(guard);
                            }
                            // Broken: close it, and connect with its slot.
                            let slot = guard.close_keeping_slot();
                            return self.connect(slot).await;
                        }
                        Some(Given::Slot) => {
                            let slot = Slot { shared: self.shared.clone(), topping: false };
                            return self.connect(slot).await;
                        }
                        None => unreachable!("a hand-off is sent full"),
                    }
                }
            }
        }
    }
}

impl<C: Connector, const BUG: u8> ConnPool<C> for Flawed<C, BUG> {
    type Guard = Guard<C>;

    fn new(config: PoolConfig, connector: C, timer: SharedTimer) -> Result<Self, ConfigError> {
        config.validate()?;
        let state = State {
            idle: Vec::new(),
            slots: 0,
            opening: 0,
            topping: 0,
            waiters: VecDeque::new(),
            next_waiter: 0,
            total_waits: 0,
        };
        let shared = Arc::new(Shared { bug: BUG, connector, config, timer, state: Mutex::new(state) });
        shared.top_up();
        Ok(Flawed { shared })
    }

    async fn get(&self) -> Result<Guard<C>, PoolError> {
        let mut timeout = self.shared.config.checkout_timeout;
        if BUG == TIMEOUT_ONE_MS_LATE {
            timeout = timeout.saturating_add(Duration::from_millis(1));
        }
        let result = if matches!(BUG, TIMEOUT_IGNORED | CONNECT_NOT_BOUNDED | RETRY_CONNECT_FOREVER) {
            self.checkout().await
        } else {
            tokio::select! {
                biased;
                () = self.shared.timer.sleep(timeout) => Err(PoolError::Timeout),
                result = self.checkout() => result,
            }
        };
        if result.is_ok() {
            self.shared.replenish();
        }
        result
    }

    fn stats(&self) -> PoolStats {
        let state = lock(&self.shared.state);
        PoolStats {
            in_use: if BUG == IN_USE_COUNTS_OPENING {
                state.slots - state.idle.len()
            } else {
                state.slots - state.idle.len() - state.opening
            },
            idle: state.idle.len(),
            waiting: state.waiters.len(),
            total_waits: state.total_waits,
        }
    }
}

// The list the self-check runs
// ---------------------------------------------------------------------------------

use harness::conn_pool::{factory, redis_factory, redis_suite, suite};
use harness::Case;

macro_rules! pool_mutant {
    ($bug:ident, $case:literal) => {
        crate::Mutant {
            name: concat!("conn_pool::", stringify!($bug)),
            suite: if $case.starts_with("conn_pool::l4_") {
                redis_suite(redis_factory::<Flawed<_, $bug>>())
            } else {
                suite(factory::<Flawed<_, $bug>>())
            },
            rejected_by: $case,
        }
    };
}

/// Every bug, with the case that must reject it.
pub fn mutants() -> Vec<crate::Mutant> {
    vec![
        pool_mutant!(LIFO_WAITERS, "conn_pool::l1_sizing_and_timeout::short_sequences"),
        pool_mutant!(TIMEOUT_IGNORED, "conn_pool::l1_sizing_and_timeout::short_sequences"),
        pool_mutant!(CONNECT_NOT_BOUNDED, "conn_pool::l1_sizing_and_timeout::edges"),
        pool_mutant!(CONNECT_ERROR_LEAKS_SLOT, "conn_pool::l1_sizing_and_timeout::short_sequences"),
        pool_mutant!(IN_USE_COUNTS_OPENING, "conn_pool::l1_sizing_and_timeout::edges"),
        pool_mutant!(TOTAL_WAITS_COUNTS_ALL, "conn_pool::l1_sizing_and_timeout::short_sequences"),
        pool_mutant!(OVER_MAX_BY_ONE, "conn_pool::l1_sizing_and_timeout::short_sequences"),
        pool_mutant!(TIMEOUT_ONE_MS_LATE, "conn_pool::l1_sizing_and_timeout::short_sequences"),
        pool_mutant!(IDLE_FIFO, "conn_pool::l1_sizing_and_timeout::short_sequences"),
        pool_mutant!(ABANDONED_CONNECT_LEAKS, "conn_pool::l1_sizing_and_timeout::edges"),
        pool_mutant!(NO_VALIDATION, "conn_pool::l2_validation_and_reaping::short_sequences"),
        pool_mutant!(HANDOFF_NOT_VALIDATED, "conn_pool::l2_validation_and_reaping::short_sequences"),
        pool_mutant!(LIFETIME_FROM_LAST_USE, "conn_pool::l2_validation_and_reaping::edges"),
        pool_mutant!(IDLE_TIMEOUT_IGNORED, "conn_pool::l2_validation_and_reaping::short_sequences"),
        pool_mutant!(MIN_IDLE_NOT_REPLENISHED, "conn_pool::l2_validation_and_reaping::short_sequences"),
        pool_mutant!(BROKEN_DISCARD_LEAKS_SLOT, "conn_pool::l2_validation_and_reaping::short_sequences"),
        pool_mutant!(EXPIRED_RETURN_KEPT, "conn_pool::l2_validation_and_reaping::short_sequences"),
        pool_mutant!(CANCEL_LOSES_HANDOFF, "conn_pool::l3_concurrency::cancellation"),
        pool_mutant!(CANCELLED_STAYS_QUEUED, "conn_pool::l3_concurrency::cancellation"),
        pool_mutant!(CHECK_THEN_ACT, "conn_pool::l3_concurrency::stress_invariants"),
        pool_mutant!(PANIC_LEAKS_SLOT, "conn_pool::l3_concurrency::cancellation"),
        pool_mutant!(VALIDATION_BYPASS_WINDOW, "conn_pool::l4_redis::outage"),
        pool_mutant!(RETRY_CONNECT_FOREVER, "conn_pool::l4_redis::outage"),
    ]
}

/// Implementations that must pass every case, by prefix: the plain base (so each
/// mutant's rejection is due to its one bug).
pub fn must_pass() -> Vec<(String, Vec<Case>)> {
    let base = suite(factory::<Flawed<_, NONE>>()).into_iter().chain(redis_suite(redis_factory::<Flawed<_, NONE>>()));
    vec![("mutant_base".to_string(), base.collect())]
}
