//! Exercise: a bounded async connection pool, generic over a connector: sizing and
//! checkout timeout (level 1), validation and expiry (level 2), cancellation and
//! concurrency (level 3), and real connections to Redis killed and restarted under it
//! (level 4). Statement: `exercises/statements/conn_pool.md`.
//!
//! * `contract.rs`: what a learner implements ([`ConnPool`]) and the [`Connector`] it
//!   is generic over;
//! * `model.rs`: the model (a sequential pool in virtual milliseconds) and its `Spec`;
//! * `suite.rs`: the fake connector's driver, inputs, cases, levels 1-3; `redis.rs`: level 4.
//!
//! This module holds the connectors the harness supplies ([`FakeConnector`],
//! [`RedisConnector`]), the object-safe adapter the suites drive, and the factories.

mod contract;
mod model;
mod redis;
mod suite;

use std::future::Future;
use std::ops::DerefMut;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use self::contract::*;
pub use self::model::{config, Config, Connects, Op, Output};
pub use self::redis::redis_suite;
pub use self::suite::{suite, EXERCISE, L1, L2, L3, L4};
use crate::clock::{SharedTimer, Timestamp};
use crate::linearizability::SplitMix;
use crate::watchdog::lock;

use crate::BoxFuture;

/// A checked-out connection, erased.
pub type ErasedGuard<T> = Box<dyn DerefMut<Target = T> + Send>;

/// The pool under test, behind a trait object so the suite is compiled once.
pub trait ErasedPool<T>: Send + Sync {
    fn get(&self) -> BoxFuture<'_, Result<ErasedGuard<T>, PoolError>>;
    fn stats(&self) -> PoolStats;
}

/// `P` as a pool of `C`'s connections (`C` named so the impl below can be generic).
struct Erased<C, P>(P, std::marker::PhantomData<fn() -> C>);

impl<C: Connector, P: ConnPool<C>> ErasedPool<C::Conn> for Erased<C, P> {
    fn get(&self) -> BoxFuture<'_, Result<ErasedGuard<C::Conn>, PoolError>> {
        Box::pin(async move {
            let guard = ConnPool::get(&self.0).await?;
            Ok(Box::new(guard) as ErasedGuard<C::Conn>)
        })
    }
    fn stats(&self) -> PoolStats {
        ConnPool::stats(&self.0)
    }
}

/// Builds the pool under test over the fake connector (inside a Tokio runtime).
pub type Factory = fn(PoolConfig, FakeConnector, SharedTimer) -> Result<Arc<dyn ErasedPool<FakeConn>>, ConfigError>;

/// The factory for pool `P`.
pub fn factory<P: ConnPool<FakeConnector>>() -> Factory {
    |config, connector, timer| Ok(Arc::new(Erased(P::new(config, connector, timer)?, std::marker::PhantomData)))
}

/// Builds the pool under test over Redis (inside a Tokio runtime).
pub type RedisFactory =
    fn(PoolConfig, RedisConnector, SharedTimer) -> Result<Arc<dyn ErasedPool<RedisConn>>, ConfigError>;

pub fn redis_factory<P: ConnPool<RedisConnector>>() -> RedisFactory {
    |config, connector, timer| Ok(Arc::new(Erased(P::new(config, connector, timer)?, std::marker::PhantomData)))
}

// The fake connector
// ---------------------------------------------------------------------------------

/// What the fake connector shares with its connections and the test driver.
#[derive(Debug)]
pub struct FakeState {
    connects: Mutex<Connects>,
    next_serial: AtomicU64,
    /// Connections with a serial below this are broken (every open one, at `BreakAll`).
    broken_below: AtomicU64,
    open: AtomicUsize,
    opening: AtomicUsize,
    /// The most connections ever open or being opened at once.
    peak: AtomicUsize,
    /// Bumped on every call: the driver waits until nothing moves.
    activity: AtomicU64,
    /// Yields per call: `None` none; `Some(rng)` 0-3 at random, from a seeded generator.
    yields: Mutex<Option<SplitMix>>,
    timer: SharedTimer,
}

impl FakeState {
    pub fn set_connects(&self, c: Connects) {
        *lock(&self.connects) = c;
    }
    /// Every connection open now breaks.
    pub fn break_all(&self) {
        self.broken_below.store(self.next_serial.load(Ordering::SeqCst), Ordering::SeqCst);
    }
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
    pub fn activity(&self) -> u64 {
        self.activity.load(Ordering::SeqCst)
    }
    fn touch(&self) {
        self.activity.fetch_add(1, Ordering::SeqCst);
    }
    async fn pause(&self) {
        let n = lock(&self.yields).as_mut().map_or(1, |rng| rng.below(4));
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    }
}

/// A connector to no database: numbers its connections, counts those open, breaks and
/// fails on command, and yields inside every call so calls interleave.
#[derive(Clone, Debug)]
pub struct FakeConnector {
    pub state: Arc<FakeState>,
}

impl FakeConnector {
    /// `random_yields`: 0-3 yields per call from this seed, else one.
    pub fn new(timer: SharedTimer, random_yields: Option<u64>) -> Self {
        FakeConnector {
            state: Arc::new(FakeState {
                connects: Mutex::new(Connects::Up),
                next_serial: AtomicU64::new(0),
                broken_below: AtomicU64::new(0),
                open: AtomicUsize::new(0),
                opening: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                activity: AtomicU64::new(0),
                yields: Mutex::new(random_yields.map(SplitMix::new)),
                timer,
            }),
        }
    }
}

/// A fake connection: its serial, when it was opened, and whether it broke.
#[derive(Debug)]
pub struct FakeConn {
    pub serial: u64,
    pub opened: Timestamp,
    broken: bool,
    state: Arc<FakeState>,
}

impl FakeConn {
    /// Breaks this connection: `is_valid` says `false` from now on.
    pub fn break_it(&mut self) {
        self.broken = true;
    }
    pub fn is_broken(&self) -> bool {
        self.broken || self.serial < self.state.broken_below.load(Ordering::SeqCst)
    }
}

impl Drop for FakeConn {
    fn drop(&mut self) {
        self.state.open.fetch_sub(1, Ordering::SeqCst);
        self.state.touch();
    }
}

/// Counts a connect in flight until dropped (finished or abandoned).
struct Opening<'a>(&'a FakeState);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.opening.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

impl Connector for FakeConnector {
    type Conn = FakeConn;

    fn connect(&self) -> impl Future<Output = Result<FakeConn, ConnectError>> + Send {
        let state = self.state.clone();
        async move {
            state.touch();
            let opening = state.opening.fetch_add(1, Ordering::SeqCst) + 1;
            let _opening = Opening(&state);
            state.peak.fetch_max(opening + state.open(), Ordering::SeqCst);
            state.pause().await;
            let connects = *lock(&state.connects);
            match connects {
                Connects::Up => {
                    state.open.fetch_add(1, Ordering::SeqCst);
                    let serial = state.next_serial.fetch_add(1, Ordering::SeqCst);
                    Ok(FakeConn { serial, opened: state.timer.now(), broken: false, state: state.clone() })
                }
                Connects::Down => Err(model::refused()),
                Connects::Hang => std::future::pending().await,
            }
        }
    }

    async fn is_valid(&self, conn: &mut FakeConn) -> bool {
        self.state.touch();
        self.state.pause().await;
        self.state.touch();
        !conn.is_broken()
    }
}

// The Redis connector
// ---------------------------------------------------------------------------------

/// A connection to Redis.
pub struct RedisConn {
    pub conn: ::redis::aio::MultiplexedConnection,
}

/// Connects to one Redis server; `PING` is the validation. Connects and pings give up
/// after `io_timeout` (a dead server must not hang validation).
#[derive(Clone, Debug)]
pub struct RedisConnector {
    pub url: String,
    pub io_timeout: Duration,
}

impl Connector for RedisConnector {
    type Conn = RedisConn;

    fn connect(&self) -> impl Future<Output = Result<RedisConn, ConnectError>> + Send {
        let (url, io_timeout) = (self.url.clone(), self.io_timeout);
        async move {
            let client = ::redis::Client::open(url).map_err(|e| ConnectError(e.to_string()))?;
            let config = ::redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(io_timeout))
                .set_response_timeout(Some(io_timeout));
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| ConnectError(e.to_string()))?;
            Ok(RedisConn { conn })
        }
    }

    async fn is_valid(&self, conn: &mut RedisConn) -> bool {
        ::redis::cmd("PING").query_async::<String>(&mut conn.conn).await.is_ok_and(|pong| pong == "PONG")
    }
}
