//! `cargo bench --bench conn_pool`: checkout/return throughput of the attempt against
//! the reference; with `--features peers`, also `deadpool` (managed) and `bb8`.
//!
//! Workload: a pool of 8 no-op connections (connect and validation cost nothing, so the
//! pool's own bookkeeping is what is measured); 1 task, then 16 tasks (twice the pool:
//! they queue), each doing 2,000 checkouts (get, touch the connection, drop), on a
//! 2-worker Tokio runtime. Every pool validates on checkout (bb8's default too).

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use harness::clock::TokioTimer;
use harness::conn_pool::{ConnPool, ConnectError, Connector, PoolConfig};

const MAX_SIZE: usize = 8;
const CHECKOUTS_PER_TASK: usize = 2_000;

/// A connection to nothing.
pub struct NoopConn(u64);

#[derive(Clone, Default)]
struct Noop;

impl Connector for Noop {
    type Conn = NoopConn;
    async fn connect(&self) -> Result<NoopConn, ConnectError> {
        Ok(NoopConn(7))
    }
    async fn is_valid(&self, conn: &mut NoopConn) -> bool {
        conn.0 == 7
    }
}

fn config() -> PoolConfig {
    PoolConfig {
        max_size: MAX_SIZE,
        min_idle: 0,
        checkout_timeout: Duration::from_secs(30),
        max_lifetime: Duration::MAX,
        idle_timeout: Duration::MAX,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime")
}

/// `tasks` tasks, each running `checkout` `CHECKOUTS_PER_TASK` times.
async fn hammer<F, Fut>(tasks: usize, checkout: Arc<F>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let checkout = checkout.clone();
            tokio::spawn(async move {
                for _ in 0..CHECKOUTS_PER_TASK {
                    checkout().await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("a bench task");
    }
}

fn bench_one<F, Fut>(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, checkout: Arc<F>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    for tasks in [1, 16] {
        let mut group = c.benchmark_group(format!("conn_pool/checkout_return_{tasks}_tasks"));
        group.throughput(Throughput::Elements((tasks * CHECKOUTS_PER_TASK) as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| rt.block_on(hammer(tasks, checkout.clone())))
        });
        group.finish();
    }
}

fn ours<P: ConnPool<Noop>>(rt: &tokio::runtime::Runtime) -> Arc<P> {
    let _runtime = rt.enter();
    Arc::new(P::new(config(), Noop, TokioTimer::shared()).expect("a valid config"))
}

fn checkout_ours<P: ConnPool<Noop>>(
    pool: Arc<P>,
) -> Arc<impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static> {
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            let conn = pool.get().await.expect("a connection within 30s");
            black_box(conn.0);
        }) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
    })
}

fn attempt_is_ready(rt: &tokio::runtime::Runtime) -> bool {
    let probe = || {
        let pool = ours::<exercises::conn_pool::Pool<Noop>>(rt);
        rt.block_on(async { pool.get().await.map(|conn| conn.0) })
    };
    let works = |got: &Result<u64, harness::conn_pool::PoolError>| match got {
        Ok(7) => Ok(()),
        other => Err(format!("get() on a fresh pool gave {:?}", other.as_ref().map_err(|e| e.to_string()))),
    };
    common::attempt_probe("conn_pool", probe, works).is_some()
}

#[cfg(feature = "peers")]
mod peers {
    use super::*;

    pub struct DeadpoolManager;

    impl deadpool::managed::Manager for DeadpoolManager {
        type Type = NoopConn;
        type Error = std::convert::Infallible;
        async fn create(&self) -> Result<NoopConn, Self::Error> {
            Ok(NoopConn(7))
        }
        async fn recycle(
            &self,
            conn: &mut NoopConn,
            _: &deadpool::managed::Metrics,
        ) -> deadpool::managed::RecycleResult<Self::Error> {
            black_box(conn.0);
            Ok(())
        }
    }

    pub struct Bb8Manager;

    impl bb8::ManageConnection for Bb8Manager {
        type Connection = NoopConn;
        type Error = std::convert::Infallible;
        async fn connect(&self) -> Result<NoopConn, Self::Error> {
            Ok(NoopConn(7))
        }
        async fn is_valid(&self, conn: &mut NoopConn) -> Result<(), Self::Error> {
            black_box(conn.0);
            Ok(())
        }
        fn has_broken(&self, _: &mut NoopConn) -> bool {
            false
        }
    }

    pub fn bench(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
        let pool = deadpool::managed::Pool::<DeadpoolManager>::builder(DeadpoolManager)
            .max_size(MAX_SIZE)
            .build()
            .expect("a deadpool pool");
        bench_one(
            c,
            rt,
            "deadpool",
            Arc::new(move || {
                let pool = pool.clone();
                async move {
                    let conn = pool.get().await.expect("a deadpool connection");
                    black_box(conn.0);
                }
            }),
        );
        // bb8 spawns its reaper at build time: inside the runtime.
        let pool = {
            let _runtime = rt.enter();
            bb8::Pool::builder().max_size(MAX_SIZE as u32).build_unchecked(Bb8Manager)
        };
        bench_one(
            c,
            rt,
            "bb8",
            Arc::new(move || {
                let pool = pool.clone();
                async move {
                    let conn = pool.get().await.expect("a bb8 connection");
                    black_box(conn.0);
                }
            }),
        );
    }
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    if attempt_is_ready(&rt) {
        let pool = ours::<exercises::conn_pool::Pool<Noop>>(&rt);
        bench_one(c, &rt, "attempt", checkout_ours(pool));
    }
    let pool = ours::<solutions::conn_pool::Pool<Noop>>(&rt);
    bench_one(c, &rt, "reference", checkout_ours(pool));
    #[cfg(feature = "peers")]
    peers::bench(c, &rt);
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = bench
}
criterion_main!(benches);
