//! The contract of the connection-pool exercise: the [`Connector`] a pool is generic
//! over, the [`ConnPool`] a learner implements, and the types in their signatures.
//! These doc comments ARE the contract.
//!
//! Where the libraries differ, the choice and the library it follows is said at the
//! rule: waiters first come, first served (deadpool, bb8, HikariCP); idle connections
//! LIFO (deadpool's `QueueMode::Lifo`, bb8's `QueueStrategy::Lifo`); validation on every
//! checkout (bb8's `test_on_check_out`, deadpool's recycle); connect errors returned at
//! once (deadpool), not retried until the timeout (HikariCP); expiry checked lazily at
//! checkout and return (deadpool's recycle checks) rather than by a reaper thread;
//! `min_idle` refilled in the background (bb8's `build_unchecked` and replenishing).

use std::fmt;
use std::future::Future;
use std::ops::DerefMut;
use std::time::Duration;

use crate::clock::SharedTimer;

/// Why a connection could not be opened (the connector's words).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnectError(pub String);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connect failed: {}", self.0)
    }
}

impl std::error::Error for ConnectError {}

/// Opens and checks connections to one database. The harness supplies two: a fake
/// (counts live connections, can be told to fail or break, yields to interleave) and
/// a Redis one (`PING` as validation).
pub trait Connector: Send + Sync + 'static {
    /// A connection: closed when dropped.
    type Conn: Send + 'static;
    /// Opens a new connection. May take a while, fail, or (a black-holed server) never
    /// finish: the pool bounds it (see [`ConnPool::get`]).
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, ConnectError>> + Send;
    /// Whether `conn` still works (Redis: a `PING` answered). `false`: broken, discard it.
    fn is_valid(&self, conn: &mut Self::Conn) -> impl Future<Output = bool> + Send;
}

/// How a pool is sized and when its connections expire. Durations are virtual in the
/// tests (whole milliseconds); `Duration::MAX` means "never".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolConfig {
    /// At most this many connections exist at once: checked out, idle, or being opened.
    pub max_size: usize,
    /// The pool keeps at least this many idle connections (while `max_size` allows),
    /// refilling in the background (see [`ConnPool`], "min_idle").
    pub min_idle: usize,
    /// How long `get()` may take in all: waiting, validating and connecting.
    pub checkout_timeout: Duration,
    /// A connection this old (since it was opened) is closed, never handed out.
    pub max_lifetime: Duration,
    /// An idle connection unused this long (since it was returned, or opened) is closed.
    pub idle_timeout: Duration,
}

/// A [`PoolConfig`] that cannot work. [`PoolConfig::validate`] checks the fields in
/// this order and reports the first that fails.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConfigError {
    /// `max_size` is 0: no `get()` could ever succeed.
    ZeroMaxSize,
    /// `min_idle` above `max_size` could never be met.
    MinIdleAboveMax { min_idle: usize, max_size: usize },
    /// A zero `checkout_timeout` (use a short one, not none).
    ZeroTimeout,
    /// A zero `max_lifetime` (every connection would be expired at birth).
    ZeroLifetime,
    /// A zero `idle_timeout`.
    ZeroIdleTimeout,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroMaxSize => write!(f, "max_size must be at least 1"),
            ConfigError::MinIdleAboveMax { min_idle, max_size } => {
                write!(f, "min_idle {min_idle} exceeds max_size {max_size}")
            }
            ConfigError::ZeroTimeout => write!(f, "checkout_timeout must be longer than zero"),
            ConfigError::ZeroLifetime => write!(f, "max_lifetime must be longer than zero (Duration::MAX: never)"),
            ConfigError::ZeroIdleTimeout => write!(f, "idle_timeout must be longer than zero (Duration::MAX: never)"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl PoolConfig {
    /// The checks [`ConnPool::new`] must make, in this order (the first failing one is
    /// the error).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_size == 0 {
            return Err(ConfigError::ZeroMaxSize);
        }
        if self.min_idle > self.max_size {
            return Err(ConfigError::MinIdleAboveMax { min_idle: self.min_idle, max_size: self.max_size });
        }
        if self.checkout_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        if self.max_lifetime.is_zero() {
            return Err(ConfigError::ZeroLifetime);
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::ZeroIdleTimeout);
        }
        Ok(())
    }
}

/// Why `get()` gave no connection. Typed: a caller can tell "busy" from "down".
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PoolError {
    /// `checkout_timeout` passed with no connection to give.
    Timeout,
    /// The pool had room and tried to open a connection, and the connector failed.
    Connect(ConnectError),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Timeout => write!(f, "no connection within the checkout timeout"),
            PoolError::Connect(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PoolError {}

/// A snapshot of the pool, read without waiting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PoolStats {
    /// Connections checked out: guards alive.
    pub in_use: usize,
    /// Open connections in the pool, not checked out (expired ones not yet closed
    /// included: expiry is checked lazily, see [`ConnPool`]).
    pub idle: usize,
    /// `get()` calls waiting for a connection right now (not the ones validating or
    /// connecting with a slot of their own; not those timed out or cancelled).
    pub waiting: usize,
    /// How many `get()` calls ever had to wait (found no idle connection and no room).
    pub total_waits: u64,
}

/// A bounded pool of connections from connector `C`.
///
/// **Slots.** A connection being opened, idle, or checked out takes one of `max_size`
/// slots; never more exist at once, however calls interleave.
///
/// **`get()`**, at time `t`:
/// 1. *Sweep*: every idle connection that is expired is closed (dropped). Expired at `t`:
///    `t ≥ opened + max_lifetime`, or `t ≥ idle_since + idle_timeout` (`idle_since`: when
///    it was last returned, or opened for an idle top-up).
/// 2. While idle connections remain, take the most recently returned one (LIFO) and
///    validate it with [`Connector::is_valid`] (on every checkout, as bb8's
///    `test_on_check_out`): valid → it is the answer; broken → close it, next.
/// 3. No idle connection and a free slot: connect. Success → the answer; failure →
///    `Err(PoolError::Connect)` at once (as deadpool; not retried) and the slot is free.
/// 4. No idle connection and no free slot: wait, in a first-come-first-served queue,
///    for a returned connection (handed over directly, then validated as in 2) or a
///    freed slot (then connect as in 3). Any slot that frees up while calls wait (a
///    connection closed, a connect failed, abandoned or cancelled) goes to the head waiter.
///
/// The whole call, waiting, validating and connecting included, ends by
/// `checkout_timeout` after it started: then `Err(PoolError::Timeout)`, whatever it
/// was doing (a connect still running is abandoned and its slot freed). A deadline
/// reached at the same instant as anything else wins: at `t ≥ deadline` the call has
/// failed. Dropping the `get()` future (cancellation) at any point, even after a
/// connection was handed to it and before it ran again, leaks neither a slot nor a
/// connection: that connection goes to the next waiter or back to the pool.
///
/// **Return**: dropping the guard (also while unwinding from a panic) returns its
/// connection at time `t`: after the sweep of 1, a connection past its `max_lifetime`
/// is closed (its slot goes to the head waiter, who connects); else it goes to the
/// head waiter if any, else on top of the idle stack (`idle_since = t`). Broken
/// connections are only found at checkout (step 2).
///
/// **min_idle.** At construction (`new` spawns onto the current Tokio runtime: call it
/// inside one), after every successful `get()` and after every return, the pool opens
/// connections in the background while `idle + top-ups in flight < min_idle` and a slot
/// is free. A top-up that lands is given back like a returned guard: to the head waiter
/// if any, else on top of the idle stack (`idle_since` = when opened). A failed top-up
/// just frees its slot and is not retried until the next `get()` or return; a top-up is
/// abandoned after `checkout_timeout`.
///
/// **Time** comes only from the [`SharedTimer`] given to `new` (`now()` and `sleep()`).
pub trait ConnPool<C: Connector>: Sized + Send + Sync + 'static {
    /// A checked-out connection: derefs to it, returns it to the pool when dropped.
    type Guard: DerefMut<Target = C::Conn> + Send + 'static;

    /// A pool for `config` (checked as [`PoolConfig::validate`] does, same error).
    fn new(config: PoolConfig, connector: C, timer: SharedTimer) -> Result<Self, ConfigError>;

    /// A valid connection, or a typed error within `checkout_timeout` (see above).
    fn get(&self) -> impl Future<Output = Result<Self::Guard, PoolError>> + Send;

    /// The counts right now (see [`PoolStats`]).
    fn stats(&self) -> PoolStats;
}
