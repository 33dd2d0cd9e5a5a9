//! Reference solution: a bounded async connection pool.
//!
//! One `std::sync::Mutex` guards the whole state: the idle stack, the number of slots
//! taken, and a FIFO queue of waiters. It is never held across an `.await`, so a plain
//! mutex is right (and cheaper than an async one). The two ideas that make the pool
//! exact under cancellation:
//!
//! * **Ownership does the bookkeeping.** A slot reserved for a connect is a [`Slot`],
//!   a connection checked out is a [`Guard`]: each gives itself back in `Drop`. A get()
//!   cancelled (or timed out) at any await drops what it holds, and the pool gets it
//!   back: no code path has to remember to.
//! * **Hand-offs are values that return themselves.** A returned connection (or a freed
//!   slot) goes straight to the head waiter through a oneshot channel as a [`Handoff`].
//!   If that waiter is gone before it runs, the channel drops the `Handoff`, whose `Drop`
//!   gives it back to the pool, and so on to the next waiter: FIFO and no leak.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use harness::clock::{SharedTimer, Timestamp};
use harness::conn_pool::{ConfigError, ConnPool, Connector, PoolConfig, PoolError, PoolStats};
use tokio::sync::oneshot;

/// The pool: a handle on the shared state (guards and background top-ups hold it too).
pub struct Pool<C: Connector> {
    shared: Arc<Shared<C>>,
}

struct Shared<C: Connector> {
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
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut state.idle)
            .into_iter()
            .partition(|i| self.expired(i.live.opened, now) || now >= i.idle_since + self.config.idle_timeout);
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
            if self.expired(live.opened, now) {
                closing.push(live);
                self.free_slot(&mut state);
            } else {
                let mut handoff = Handoff { shared: self.clone(), what: Some(Given::Conn(live)) };
                loop {
                    let Some(waiter) = state.waiters.pop_front() else {
                        if let Some(Given::Conn(live)) = handoff.what.take() {
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
        self.top_up();
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
        lock(&self.shared.state).waiters.retain(|w| w.id != self.id);
    }
}

/// What a checkout found under the lock.
enum Found<C: Connector> {
    Idle(Guard<C>),
    Room(Slot<C>),
    Wait(oneshot::Receiver<Handoff<C>>, u64),
}

impl<C: Connector> Pool<C> {
    fn find(&self) -> Found<C> {
        let shared = &self.shared;
        let now = shared.timer.now();
        let mut state = lock(&shared.state);
        let expired = shared.sweep(&mut state, now);
        let found = if let Some(idle) = state.idle.pop() {
            Found::Idle(Guard { shared: shared.clone(), live: Some(idle.live) })
        } else if state.slots < shared.config.max_size {
            state.slots += 1;
            state.opening += 1;
            Found::Room(Slot { shared: shared.clone(), topping: false })
        } else {
            let (tx, rx) = oneshot::channel();
            let id = state.next_waiter;
            state.next_waiter += 1;
            state.total_waits += 1;
            state.waiters.push_back(Waiter { id, tx });
            Found::Wait(rx, id)
        };
        drop(state);
        drop(expired);
        found
    }

    async fn connect(&self, slot: Slot<C>) -> Result<Guard<C>, PoolError> {
        // If this future is dropped mid-connect, `slot` frees itself.
        let conn = self.shared.connector.connect().await.map_err(PoolError::Connect)?;
        let live = Live { conn, opened: self.shared.timer.now() };
        slot.into_connection();
        Ok(Guard { shared: self.shared.clone(), live: Some(live) })
    }

    async fn checkout(&self) -> Result<Guard<C>, PoolError> {
        loop {
            match self.find() {
                Found::Idle(mut guard) => {
                    // Validated on every checkout: a connection fine when returned may
                    // have died since. If this get() is dropped meanwhile, the guard
                    // returns the connection.
                    if self.shared.connector.is_valid(&mut *guard).await {
                        return Ok(guard);
                    }
                    // Broken: close it and free its slot, then look again.
                    drop(guard.close_keeping_slot());
                }
                Found::Room(slot) => return self.connect(slot).await,
                Found::Wait(rx, id) => {
                    let _queued = Queued { shared: &self.shared, id };
                    let Ok(mut handoff) = rx.await else {
                        unreachable!("a waiter is only dropped from the queue by sending to it or by itself")
                    };
                    match handoff.what.take() {
                        Some(Given::Conn(live)) => {
                            let mut guard = Guard { shared: self.shared.clone(), live: Some(live) };
                            if self.shared.connector.is_valid(&mut *guard).await {
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

impl<C: Connector> ConnPool<C> for Pool<C> {
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
        let shared = Arc::new(Shared { connector, config, timer, state: Mutex::new(state) });
        shared.top_up();
        Ok(Pool { shared })
    }

    async fn get(&self) -> Result<Guard<C>, PoolError> {
        let result = tokio::select! {
            // At the deadline the get has failed, even if a connection is ready too.
            biased;
            () = self.shared.timer.sleep(self.shared.config.checkout_timeout) => Err(PoolError::Timeout),
            result = self.checkout() => result,
        };
        if result.is_ok() {
            self.shared.top_up();
        }
        result
    }

    fn stats(&self) -> PoolStats {
        let state = lock(&self.shared.state);
        PoolStats {
            in_use: state.slots - state.idle.len() - state.opening,
            idle: state.idle.len(),
            waiting: state.waiters.len(),
            total_waits: state.total_waits,
        }
    }
}
