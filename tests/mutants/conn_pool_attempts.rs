//! Candidate-style connection pools of another design than the reference's: waiters
//! queue on a fair `tokio::sync::Semaphore` of `max_size` tickets (deadpool's design)
//! instead of a queue of oneshot senders. A ticket is the right to check out; idle
//! connections hold none. A return pushes the connection on the idle stack and drops
//! its ticket, which the semaphore hands to the longest waiter, who pops it.
//! `Ticketed<_, NONE>` is correct: it must pass every case (a red verdict would be a
//! grader bug); each other switch is a bug a candidate writes into this design.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use harness::clock::{SharedTimer, Timestamp};
use harness::conn_pool::{ConfigError, ConnPool, Connector, PoolConfig, PoolError, PoolStats};
use harness::Case;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

pub const NONE: u8 = 0;
/// A top-up that lands does not wake a ticket holder waiting for room: it waits until
/// its timeout although a connection sits idle.
pub const SILENT_TOP_UP: u8 = 1;
/// `waiting` is decremented after the ticket arrives, not in a drop guard: a waiter
/// that times out stays counted.
pub const WAITING_NOT_GUARDED: u8 = 2;

pub struct Ticketed<C: Connector, const BUG: u8 = NONE> {
    shared: Arc<Shared<C>>,
}

struct Shared<C: Connector> {
    bug: u8,
    connector: C,
    config: PoolConfig,
    timer: SharedTimer,
    tickets: Arc<Semaphore>,
    /// Wakes a ticket holder that found neither an idle connection nor room (a top-up
    /// holds the last slot) when a slot frees or a connection goes idle.
    room: Notify,
    state: Mutex<State<C::Conn>>,
}

struct Idle<T> {
    conn: T,
    opened: Timestamp,
    idle_since: Timestamp,
}

struct State<T> {
    idle: Vec<Idle<T>>,
    /// Open or being opened.
    conns: usize,
    topping: usize,
    in_use: usize,
    waiting: usize,
    total_waits: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<C: Connector> Shared<C> {
    fn expired(&self, opened: Timestamp, now: Timestamp) -> bool {
        now >= opened + self.config.max_lifetime
    }

    fn sweep(&self, state: &mut State<C::Conn>, now: Timestamp) -> Vec<Idle<C::Conn>> {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut state.idle)
            .into_iter()
            .partition(|i| self.expired(i.opened, now) || now >= i.idle_since + self.config.idle_timeout);
        state.idle = kept;
        state.conns -= gone.len();
        if !gone.is_empty() {
            self.room.notify_waiters();
        }
        gone
    }

    fn close_one(&self) {
        lock(&self.state).conns -= 1;
        self.room.notify_waiters();
    }

    fn top_up(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let mut state = lock(&self.state);
        while state.idle.len() + state.topping < self.config.min_idle && state.conns < self.config.max_size {
            state.conns += 1;
            state.topping += 1;
            let shared = self.clone();
            runtime.spawn(async move {
                let opened = tokio::select! {
                    biased;
                    () = shared.timer.sleep(shared.config.checkout_timeout) => None,
                    result = shared.connector.connect() => result.ok(),
                };
                let now = shared.timer.now();
                let mut state = lock(&shared.state);
                state.topping -= 1;
                match opened {
                    Some(conn) => state.idle.push(Idle { conn, opened: now, idle_since: now }),
                    None => state.conns -= 1,
                }
                drop(state);
                // Either way a ticket holder waiting for room can go on.
                if shared.bug != SILENT_TOP_UP {
                    shared.room.notify_waiters();
                }
            });
        }
    }
}

/// A checked-out connection and its ticket.
pub struct Guard<C: Connector> {
    shared: Arc<Shared<C>>,
    conn: Option<(C::Conn, Timestamp)>,
    ticket: Option<OwnedSemaphorePermit>,
}

impl<C: Connector> Deref for Guard<C> {
    type Target = C::Conn;
    fn deref(&self) -> &C::Conn {
        &self.conn.as_ref().expect("held until dropped").0
    }
}

impl<C: Connector> DerefMut for Guard<C> {
    fn deref_mut(&mut self) -> &mut C::Conn {
        &mut self.conn.as_mut().expect("held until dropped").0
    }
}

impl<C: Connector> Drop for Guard<C> {
    fn drop(&mut self) {
        let Some((conn, opened)) = self.conn.take() else { return };
        let now = self.shared.timer.now();
        let mut closing = None;
        {
            let mut state = lock(&self.shared.state);
            state.in_use -= 1;
            let swept = self.shared.sweep(&mut state, now);
            if self.shared.expired(opened, now) {
                state.conns -= 1;
                closing = Some(conn);
                self.shared.room.notify_waiters();
            } else {
                state.idle.push(Idle { conn, opened, idle_since: now });
                self.shared.room.notify_waiters();
            }
            drop(state);
            drop(swept);
        }
        drop(closing);
        // The ticket goes to the longest waiter, who will pop this connection.
        drop(self.ticket.take());
        self.shared.top_up();
    }
}

/// A slot reserved for a connect, given back if the connect fails or is dropped.
struct Opening<'a, C: Connector>(&'a Shared<C>);

impl<C: Connector> Drop for Opening<'_, C> {
    fn drop(&mut self) {
        self.0.close_one();
    }
}

/// Counts a get() waiting for a ticket.
struct Waiting<'a, C: Connector>(&'a Shared<C>);

impl<C: Connector> Drop for Waiting<'_, C> {
    fn drop(&mut self) {
        lock(&self.0.state).waiting -= 1;
    }
}

enum Next<T> {
    Idle(T, Timestamp),
    Connect,
    WaitForRoom,
}

impl<C: Connector, const BUG: u8> Ticketed<C, BUG> {
    async fn checkout(&self) -> Result<Guard<C>, PoolError> {
        let shared = &self.shared;
        let ticket = match shared.tickets.clone().try_acquire_owned() {
            Ok(ticket) => ticket,
            Err(_) => {
                {
                    let mut state = lock(&shared.state);
                    state.waiting += 1;
                    state.total_waits += 1;
                }
                if BUG == WAITING_NOT_GUARDED {
                    let ticket = shared.tickets.clone().acquire_owned().await.expect("the semaphore is never closed");
                    lock(&shared.state).waiting -= 1;
                    ticket
                } else {
                    let _waiting = Waiting(shared);
                    shared.tickets.clone().acquire_owned().await.expect("the semaphore is never closed")
                }
            }
        };
        let mut ticket = Some(ticket);
        loop {
            let room = shared.room.notified();
            let next = {
                let now = shared.timer.now();
                let mut state = lock(&shared.state);
                let swept = shared.sweep(&mut state, now);
                let next = if let Some(idle) = state.idle.pop() {
                    state.in_use += 1;
                    Next::Idle(idle.conn, idle.opened)
                } else if state.conns < shared.config.max_size {
                    state.conns += 1;
                    Next::Connect
                } else {
                    Next::WaitForRoom
                };
                drop(state);
                drop(swept);
                next
            };
            match next {
                Next::Idle(conn, opened) => {
                    let mut guard = Guard { shared: shared.clone(), conn: Some((conn, opened)), ticket: ticket.take() };
                    if shared.connector.is_valid(&mut *guard).await {
                        return Ok(guard);
                    }
                    // Broken: close it (not a return), keep the ticket, look again.
                    ticket = guard.ticket.take();
                    drop(guard.conn.take());
                    let mut state = lock(&shared.state);
                    state.in_use -= 1;
                    state.conns -= 1;
                }
                Next::Connect => {
                    let opening = Opening(shared);
                    let conn = shared.connector.connect().await.map_err(PoolError::Connect)?;
                    std::mem::forget(opening);
                    let opened = shared.timer.now();
                    lock(&shared.state).in_use += 1;
                    return Ok(Guard { shared: shared.clone(), conn: Some((conn, opened)), ticket: ticket.take() });
                }
                Next::WaitForRoom => room.await,
            }
        }
    }
}

impl<C: Connector, const BUG: u8> ConnPool<C> for Ticketed<C, BUG> {
    type Guard = Guard<C>;

    fn new(config: PoolConfig, connector: C, timer: SharedTimer) -> Result<Self, ConfigError> {
        config.validate()?;
        // More tickets than the semaphore can count would be a pool that never waits.
        let tickets = Arc::new(Semaphore::new(config.max_size.min(Semaphore::MAX_PERMITS)));
        let state = State { idle: Vec::new(), conns: 0, topping: 0, in_use: 0, waiting: 0, total_waits: 0 };
        let shared = Arc::new(Shared {
            bug: BUG,
            connector,
            config,
            timer,
            tickets,
            room: Notify::new(),
            state: Mutex::new(state),
        });
        shared.top_up();
        Ok(Ticketed { shared })
    }

    async fn get(&self) -> Result<Guard<C>, PoolError> {
        let result = tokio::select! {
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
            in_use: state.in_use,
            idle: state.idle.len(),
            waiting: state.waiting,
            total_waits: state.total_waits,
        }
    }
}

/// Buggy attempts of this design, each with the case that must reject it.
pub fn mutants() -> Vec<crate::Mutant> {
    use harness::conn_pool::{factory, suite};
    vec![
        crate::Mutant {
            name: "conn_pool_attempts::Ticketed::SILENT_TOP_UP",
            suite: suite(factory::<Ticketed<_, SILENT_TOP_UP>>()),
            rejected_by: "conn_pool::l3_concurrency::cancellation",
        },
        crate::Mutant {
            name: "conn_pool_attempts::Ticketed::WAITING_NOT_GUARDED",
            suite: suite(factory::<Ticketed<_, WAITING_NOT_GUARDED>>()),
            rejected_by: "conn_pool::l1_sizing_and_timeout::short_sequences",
        },
    ]
}

/// Correct attempts: every case must pass on each, by prefix.
pub fn must_pass() -> Vec<(String, Vec<Case>)> {
    use harness::conn_pool::{factory, redis_factory, redis_suite, suite};
    let cases = suite(factory::<Ticketed<_>>()).into_iter().chain(redis_suite(redis_factory::<Ticketed<_>>()));
    vec![("correct_attempt::ticketed".to_string(), cases.collect())]
}
