//! Level 4 of the connection-pool exercise: real connections to a private
//! `redis-server`, `PING` as validation. Reuse of a returned connection; an outage (the
//! server killed and restarted on its port): while it is down every `get()` fails with
//! a typed error within a bound; once it is back, no dead connection is handed out.
//! Real time is used only as liveness bounds.

use std::sync::Arc;
use std::time::Duration;

use super::contract::{PoolConfig, PoolError, PoolStats};
use super::suite::{EXERCISE, L4};
use super::{ErasedGuard, ErasedPool, RedisConn, RedisConnector, RedisFactory};
use crate::clock::{SharedTimer, Stopwatch, TokioTimer};
use crate::redis_server::{runtime, within_reconnect_window, RedisServer, OUTAGE_CALL_TIMEOUT};
use crate::suite::{Case, CaseError, CaseResult, Hints, THREADED_DEADLINE as THREADED};

/// The checkout timeout in these cases.
const TIMEOUT: Duration = Duration::from_millis(300);

/// A `get()` that has not returned after this long (real time) has hung.
fn liveness_bound() -> Duration {
    TIMEOUT * 4 + Duration::from_secs(2)
}

fn redis_pool_config(max_size: usize, min_idle: usize) -> PoolConfig {
    PoolConfig {
        max_size,
        min_idle,
        checkout_timeout: TIMEOUT,
        max_lifetime: Duration::MAX,
        idle_timeout: Duration::MAX,
    }
}

fn build(
    make: RedisFactory,
    server: &RedisServer,
    config: PoolConfig,
) -> Result<Arc<dyn ErasedPool<RedisConn>>, CaseError> {
    let timer: SharedTimer = TokioTimer::shared();
    let connector = RedisConnector { url: server.url().to_string(), io_timeout: OUTAGE_CALL_TIMEOUT };
    make(config, connector, timer).map_err(|e| CaseError::failed(format!("Pool::new({config:?}) -> {e:?}")))
}

/// `get()` within the liveness bound; a hang is a failure with its own report.
async fn get_bounded(
    pool: &dyn ErasedPool<RedisConn>,
    what: &str,
) -> Result<Result<ErasedGuard<RedisConn>, PoolError>, CaseError> {
    let _call = crate::watchdog::InFlight::new(what.to_string());
    let started = Stopwatch::start();
    match tokio::time::timeout(liveness_bound(), pool.get()).await {
        Ok(result) => Ok(result),
        Err(_) => Err(CaseError::failed(format!(
            "{what}: get() had not returned after {:?} of real time (checkout_timeout {TIMEOUT:?})",
            started.elapsed()
        ))),
    }
}

/// The stats once they show `(in_use, idle)`, or as they stand after the liveness
/// bound: on this multi-threaded runtime a pool may finish a return on another task
/// (the contract does not require the return to be done when the guard's drop returns,
/// and the scripted levels settle before they compare), so the check waits for it.
async fn settled_stats(pool: &dyn ErasedPool<RedisConn>, in_use: usize, idle: usize) -> PoolStats {
    let started = Stopwatch::start();
    loop {
        let stats = pool.stats();
        if (stats.in_use, stats.idle) == (in_use, idle) || started.elapsed() > liveness_bound() {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn client_id(guard: &mut ErasedGuard<RedisConn>) -> Result<i64, String> {
    ::redis::cmd("CLIENT").arg("ID").query_async::<i64>(&mut guard.conn).await.map_err(|e| e.to_string())
}

async fn ping(guard: &mut ErasedGuard<RedisConn>) -> Result<(), String> {
    ::redis::cmd("PING").query_async::<String>(&mut guard.conn).await.map(|_| ()).map_err(|e| e.to_string())
}

fn reuse(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    rt.block_on(async {
        let pool = build(make, &server, redis_pool_config(2, 0))?;
        let fail = |why: String| CaseError::failed(format!("{:?} on Redis: {why}", redis_pool_config(2, 0)));
        let mut first =
            get_bounded(pool.as_ref(), "first get()").await?.map_err(|e| fail(format!("get() -> {e:?}")))?;
        let id = client_id(&mut first).await.map_err(&fail)?;
        drop(first);
        settled_stats(pool.as_ref(), 0, 1).await;
        let mut again =
            get_bounded(pool.as_ref(), "second get()").await?.map_err(|e| fail(format!("get() -> {e:?}")))?;
        let again_id = client_id(&mut again).await.map_err(&fail)?;
        if again_id != id {
            return Err(fail(format!(
                "get, CLIENT ID = {id}, drop, get: CLIENT ID = {again_id}: the returned connection was not reused"
            )));
        }
        let mut other =
            get_bounded(pool.as_ref(), "third get()").await?.map_err(|e| fail(format!("get() -> {e:?}")))?;
        let other_id = client_id(&mut other).await.map_err(&fail)?;
        if other_id == id {
            return Err(fail("two guards alive at once share one connection".to_string()));
        }
        let stats = pool.stats();
        if (stats.in_use, stats.idle) != (2, 0) {
            return Err(fail(format!("two guards alive: stats {stats:?}, expected in_use 2, idle 0")));
        }
        drop((again, other));
        let stats = settled_stats(pool.as_ref(), 0, 2).await;
        if (stats.in_use, stats.idle) != (0, 2) {
            return Err(fail(format!("both returned: stats {stats:?}, expected in_use 0, idle 2")));
        }
        Ok(())
    })
}

fn outage(make: RedisFactory) -> CaseResult {
    let mut server = RedisServer::start()?;
    if !server.owned() {
        return Err(CaseError::Skipped("REDIS_URL is set: this case must kill and restart its own server".into()));
    }
    let rt = runtime()?;
    let config = redis_pool_config(2, 1);
    let fail = |why: String| CaseError::failed(format!("{config:?} on Redis: {why}"));
    let pool = rt.block_on(async { build(make, &server, config) })?;
    // Two connections held across the outage, returned (dead) once the server is back.
    let (mut a, mut b) = rt.block_on(async {
        let a = get_bounded(pool.as_ref(), "get() before the outage").await?;
        let b = get_bounded(pool.as_ref(), "get() before the outage").await?;
        match (a, b) {
            (Ok(a), Ok(b)) => Ok((a, b)),
            (a, b) => Err(fail(format!("two gets before the outage: {:?}, {:?}", a.err(), b.err()))),
        }
    })?;
    rt.block_on(async { ping(&mut a).await.and(ping(&mut b).await) }).map_err(&fail)?;
    server.kill();
    rt.block_on(async {
        // Full pool, server down: a typed error in time.
        let started = Stopwatch::start();
        match get_bounded(pool.as_ref(), "get() while Redis is down, pool full").await? {
            Err(PoolError::Timeout) => {}
            other => {
                return Err(fail(format!(
                    "Redis down, both connections checked out: get() -> {:?} after {:?}, expected Err(Timeout)",
                    other.map(|_| "a connection"),
                    started.elapsed()
                )))
            }
        }
        // Room in the pool, server down: the connect fails (or times out), typed.
        drop(b);
        for attempt in 1..=3 {
            let started = Stopwatch::start();
            if let Ok(mut guard) = get_bounded(pool.as_ref(), "get() while Redis is down").await? {
                let pinged = ping(&mut guard).await;
                return Err(fail(format!(
                    "Redis down, attempt {attempt}: get() handed out a connection (PING: {pinged:?}) after {:?}; \
                     expected Err(Connect) or Err(Timeout)",
                    started.elapsed()
                )));
            }
        }
        Ok(())
    })?;
    server.restart()?;
    // `a`, dead, comes back to the pool now that the server is up again (inside the
    // runtime: a return may spawn a top-up).
    {
        let _runtime = rt.enter();
        drop(a);
    }
    let served = within_reconnect_window(|| {
        rt.block_on(async {
            match get_bounded(pool.as_ref(), "get() after the restart").await {
                Err(e) => Some(Err(e)),
                Ok(Ok(mut guard)) => Some(match ping(&mut guard).await {
                    Ok(()) => Ok(()),
                    Err(why) => Err(fail(format!(
                        "after the restart get() handed out a dead connection (PING: {why}): \
                         it must be validated on checkout"
                    ))),
                }),
                Ok(Err(_)) => None,
            }
        })
    });
    match served {
        None => return Err(fail("no connection within 5s of the restart".to_string())),
        Some(result) => result?,
    }
    rt.block_on(async {
        for round in 0..4 {
            let mut one = get_bounded(pool.as_ref(), "get() after the restart")
                .await?
                .map_err(|e| fail(format!("round {round}: get() -> {e:?}")))?;
            let mut two = get_bounded(pool.as_ref(), "get() after the restart")
                .await?
                .map_err(|e| fail(format!("round {round}: get() -> {e:?}")))?;
            for guard in [&mut one, &mut two] {
                ping(guard).await.map_err(|why| {
                    fail(format!("round {round} after the restart: a dead connection handed out (PING: {why})"))
                })?;
            }
        }
        Ok(())
    })
}

pub fn redis_suite(make: RedisFactory) -> Vec<Case> {
    vec![
        Case::new(
            EXERCISE,
            L4,
            "reuse",
            Hints::new(
                "On real Redis connections: a returned connection is the next one handed out (same CLIENT ID), two guards alive never share one, and the stats follow.",
                "A pool only pays off if a returned connection is reused rather than reopened, and only one holder may use a connection at a time.",
                "Keep returned connections on an idle stack and pop the most recent; count in_use and idle under the pool's lock.",
            ),
            THREADED,
            move || reuse(make),
        )
        .with_redis(),
        Case::new(
            EXERCISE,
            L4,
            "outage",
            Hints::new(
                "Redis killed: get() fails with Timeout (pool full) or Connect (room) within its timeout. Redis back: connections that died meanwhile are never handed out; PING validates every checkout.",
                "A connection that was fine when returned may be dead by the next checkout: only asking the server tells. And a connect that cannot succeed must not keep the caller waiting past the timeout.",
                "Validate with the connector's is_valid on every checkout and close what fails; bound the whole checkout with select on timer.sleep(checkout_timeout).",
            ),
            THREADED,
            move || outage(make),
        )
        .with_redis(),
    ]
}
