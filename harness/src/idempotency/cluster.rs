//! Level 6 of the idempotency exercise: the Redis contract on a real Redis Cluster
//! (3 masters, 3 replicas, see [`crate::redis_cluster`]). Records spread over the
//! masters with no CROSSSLOT; a master killed after its replica was cut off (an
//! acknowledged `complete` must survive, a lost lease may execute again but never
//! completes twice); slots moved while calls run.

use std::sync::Arc;
use std::time::Duration;

use super::contract::{
    Begin, Fingerprint, IdempotencyConfig, LeaseError, RedisStoreConfig, Response, SettleError, StoreUnavailable,
};
use super::suite::EXERCISE;
use super::{ErasedRedisStore, RedisFactory};
use crate::clock::{ManualClock, Stopwatch, Timestamp};
use crate::rate_limit::CLUSTER_RECOVERY;
use crate::redis_cluster::{explain_crossslot, RedisCluster};
use crate::redis_server::{fresh_namespace, runtime, RedisTarget, CALL_TIMEOUT};
use crate::suite::{Case, CaseError, CaseResult, Hints, Level, THREADED_DEADLINE as THREADED};

pub const L6: Level = Level { number: 6, name: "cluster" };

/// Longest a call may take before it counts as hung (ten times the outage timeout).
const HUNG: Duration = Duration::from_secs(5);

fn key(i: usize) -> String {
    match i % 4 {
        0 => format!("order-{i}"),
        1 => format!("{i}"),
        2 => format!("k}}{i}{{:x"),
        _ => format!("clé-€-{i}"),
    }
}

fn body(who: &str, i: usize) -> Response {
    Response { status: 201, body: format!("{who}-{i}").into_bytes() }
}

fn connect(
    rt: &tokio::runtime::Runtime,
    make: RedisFactory,
    cluster: &RedisCluster,
    timeout: Duration,
    clock: &ManualClock,
) -> Result<(Arc<dyn ErasedRedisStore>, String), CaseError> {
    let records = IdempotencyConfig::new(Duration::from_secs(30), Duration::from_secs(600)).expect("nonzero");
    let config = RedisStoreConfig { namespace: fresh_namespace("cluster"), timeout, records };
    let namespace = config.namespace.clone();
    let store = rt
        .block_on(make(RedisTarget::Cluster(cluster.seeds().to_vec()), config, clock.shared()))
        .map_err(|e| CaseError::failed(format!("connect_cluster({:?}): {e}", cluster.seeds())))?;
    Ok((store, namespace))
}

fn explain(e: &impl std::fmt::Debug) -> String {
    explain_crossslot(format!("{e:?}"), "record")
}

/// Begin, complete, begin again (Replay) for each of `keys`, tasks at once.
async fn execute_all(store: &Arc<dyn ErasedRedisStore>, keys: Vec<(usize, String)>) -> Result<(), String> {
    let tasks: Vec<_> = keys
        .chunks(50)
        .map(|chunk| {
            let (store, chunk) = (Arc::clone(store), chunk.to_vec());
            tokio::spawn(async move {
                for (i, k) in chunk {
                    let token = match store.begin("pay", &k, Fingerprint(7)).await {
                        Ok(Begin::Execute(lease)) => lease.token,
                        other => {
                            return Err(format!("begin(\"pay\", {k:?}) on a new key returned {}", explain(&other)))
                        }
                    };
                    let done = store.complete("pay", &k, token, body("A", i)).await;
                    if done.is_err() {
                        return Err(format!("complete(\"pay\", {k:?}) with its own token returned {}", explain(&done)));
                    }
                    match store.begin("pay", &k, Fingerprint(7)).await {
                        Ok(Begin::Replay(r)) if r == body("A", i) => {}
                        other => {
                            return Err(format!(
                                "a retry of completed (\"pay\", {k:?}) returned {}, expected Replay({:?})",
                                explain(&other),
                                body("A", i)
                            ))
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| format!("a task failed: {e}"))??;
    }
    Ok(())
}

/// 1,000 records: every answer right, no CROSSSLOT, every master holds keys.
fn spread_over_masters(make: RedisFactory) -> CaseResult {
    let cluster = RedisCluster::start()?;
    let rt = runtime()?;
    let clock = ManualClock::starting_at(Timestamp::from_nanos(1_000_000_000_000));
    let (store, namespace) = connect(&rt, make, &cluster, CALL_TIMEOUT, &clock)?;
    rt.block_on(execute_all(&store, (0..1000).map(|i| (i, key(i))).collect())).map_err(CaseError::failed)?;
    cluster.require_spread(
        &namespace,
        "1000 records completed",
        "Tag a record's keys by its scope and key, not by namespace, so records spread over the cluster",
    )
}

/// `complete`, retried while it answers Unavailable ("stored or not, unknown": no
/// replica acknowledged in time, which a busy machine can cause): a retried complete
/// tells, as the contract says, and its AlreadyCompleted means this token's response
/// is stored.
fn settled(
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn ErasedRedisStore>,
    k: &str,
    token: u64,
    response: Response,
) -> Result<(), SettleError> {
    let mut done = rt.block_on(store.complete("pay", k, token, response.clone()));
    for _ in 0..20 {
        match done {
            Err(SettleError::Unavailable(_)) => {
                std::thread::sleep(Duration::from_millis(100));
                done = rt.block_on(store.complete("pay", k, token, response.clone()));
            }
            Err(SettleError::Lease(LeaseError::AlreadyCompleted)) => return Ok(()),
            other => return other,
        }
    }
    done
}

/// What one record went through before the failover.
#[derive(Clone, Debug)]
enum Before {
    /// Completed, and `complete` said Ok: its response must survive.
    Completed,
    /// `complete` answered Unavailable: stored or not, either is fine, but only this.
    Unknown,
    /// Begun (Execute with this token), never completed: the lease may be lost.
    Running(u64),
}

/// Kill a master whose replica was cut off: acknowledged responses survive, and a
/// key whose lease was lost may execute again but is completed by one executor only.
fn failover_fencing(make: RedisFactory) -> CaseResult {
    let mut cluster = RedisCluster::start()?;
    cluster.require_owned("kill")?;
    let rt = runtime()?;
    let clock = ManualClock::starting_at(Timestamp::from_nanos(1_000_000_000_000));
    let (store, _) = connect(&rt, make, &cluster, CALL_TIMEOUT, &clock)?;
    let n = 90;
    // 0..30: completed before the cut; 30..60: begun before, completed after it;
    // 60..90: begun after it (leases the failover may lose).
    let mut before: Vec<Before> = Vec::new();
    for i in 0..60 {
        match rt.block_on(store.begin("pay", &key(i), Fingerprint(7))) {
            Ok(Begin::Execute(lease)) => before.push(Before::Running(lease.token)),
            other => return Err(CaseError::failed(format!("begin on a new key returned {}", explain(&other)))),
        }
    }
    for (i, state) in before.iter_mut().enumerate().take(30) {
        let Before::Running(token) = *state else { unreachable!() };
        let done = settled(&rt, &store, &key(i), token, body("A", i));
        if done.is_err() {
            return Err(CaseError::failed(format!("complete with its own token returned {}", explain(&done))));
        }
        *state = Before::Completed;
    }
    let victim = cluster.masters()?[0].port;
    let replica = cluster.sever_replica(victim)?;
    // Begins first (a begin does not wait for replicas: acknowledged at once, then
    // lost with the master), then completes (each waits for a replica it cannot get).
    let cut = rt.block_on(async {
        let mut begins = Vec::new();
        for i in 60..n {
            let store = Arc::clone(&store);
            begins.push(tokio::spawn(async move {
                tokio::time::timeout(HUNG, store.begin("pay", &key(i), Fingerprint(7))).await
            }));
        }
        let mut out = (Vec::new(), Vec::new());
        for b in begins {
            out.1.push(b.await);
        }
        let mut completes = Vec::new();
        for (i, state) in before.iter().enumerate().take(60).skip(30) {
            let Before::Running(token) = *state else { unreachable!() };
            let store = Arc::clone(&store);
            completes.push(tokio::spawn(async move {
                tokio::time::timeout(HUNG, store.complete("pay", &key(i), token, body("A", i))).await
            }));
        }
        for c in completes {
            out.0.push(c.await);
        }
        out
    });
    // The master dies before its replica runs again: what only it had is lost.
    cluster.kill(victim)?;
    cluster.resume(replica)?;
    for (offset, answer) in cut.0.into_iter().enumerate() {
        let i = 30 + offset;
        before[i] = match answer {
            Ok(Ok(Ok(()))) => Before::Completed,
            Ok(Ok(Err(SettleError::Unavailable(_)))) => Before::Unknown,
            other => {
                return Err(CaseError::failed(format!(
                    "with one replica cut off, complete of (\"pay\", {:?}) with its own token returned {other:?}: expected \
                     Ok, or Err(Unavailable) within the timeout if no replica acknowledged it",
                    key(i)
                )))
            }
        };
    }
    for (offset, answer) in cut.1.into_iter().enumerate() {
        match answer {
            Ok(Ok(Ok(Begin::Execute(lease)))) => before.push(Before::Running(lease.token)),
            Ok(Ok(Err(StoreUnavailable(_)))) => before.push(Before::Unknown),
            other => {
                return Err(CaseError::failed(format!(
                    "with one replica cut off, begin on new key {:?} returned {other:?}",
                    key(60 + offset)
                )))
            }
        }
    }
    cluster.wait_promoted(replica)?;
    let promoted = Stopwatch::start();
    // The dead node comes back as the new master's replica (a master without one
    // cannot acknowledge a complete), and the caller's clock moves on past the
    // leases, as real time would over an outage.
    cluster.rejoin(victim)?;
    clock.advance(Duration::from_secs(61));
    for (i, state) in before.iter().enumerate() {
        let k = key(i);
        let retry = loop {
            match rt.block_on(async { tokio::time::timeout(HUNG, store.begin("pay", &k, Fingerprint(7))).await }) {
                Ok(Ok(begun)) => break begun,
                other if promoted.elapsed() > CLUSTER_RECOVERY + Duration::from_secs(60) => {
                    return Err(CaseError::failed(format!(
                        "the dead master's replica was promoted {CLUSTER_RECOVERY:?} ago (the cluster says ok), but \
                         begin(\"pay\", {k:?}) still returns {other:?}: the client must learn the new topology"
                    )))
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let executed = match (state, retry) {
            (Before::Completed | Before::Unknown, Begin::Replay(r)) if r == body("A", i) => continue,
            (Before::Completed, other) => {
                return Err(CaseError::failed(format!(
                "(\"pay\", {k:?}) was completed and complete said Ok, then its master failed over: a retry returned \
                     {other:?}, expected Replay({:?}). Answer Ok only once a replica has the write (WAIT 1)",
                body("A", i)
            )))
            }
            (_, Begin::Execute(lease)) => lease.token,
            (_, other) => {
                return Err(CaseError::failed(format!(
                    "after the failover and 61s, a retry of (\"pay\", {k:?}) ({state:?} before) returned {other:?}, \
                     expected Execute (its lease expired or was lost){}",
                    if matches!(state, Before::Unknown) { " or the stored response's Replay" } else { "" }
                )))
            }
        };
        if let Before::Running(old) = *state {
            let late = rt.block_on(store.complete("pay", &k, old, body("A", i)));
            if !matches!(late, Err(SettleError::Lease(LeaseError::NoSuchRecord | LeaseError::StaleToken))) {
                return Err(CaseError::failed(format!(
                    "(\"pay\", {k:?}): executor A began (token {old}), its master failed over, and a retry began executor \
                     B (token {executed}). A's late complete returned {late:?}, expected Err(StaleToken) or \
                     Err(NoSuchRecord): two executors must never both complete one key. Tokens must keep increasing \
                     per record across the data a failover loses"
                )));
            }
        }
        let done = settled(&rt, &store, &k, executed, body("B", i));
        let replay = rt.block_on(store.begin("pay", &k, Fingerprint(7)));
        if done.is_err() || !matches!(&replay, Ok(Begin::Replay(r)) if *r == body("B", i)) {
            return Err(CaseError::failed(format!(
                "after the failover, executor B of (\"pay\", {k:?}) completed: {done:?}, then a retry returned \
                 {replay:?}, expected Ok and Replay({:?})",
                body("B", i)
            )));
        }
    }
    Ok(())
}

/// Slots holding records move to another master while retries of those records
/// run: every answer right, no error.
fn resharding(make: RedisFactory) -> CaseResult {
    let cluster = RedisCluster::start()?;
    cluster.require_owned("reshard")?;
    let rt = runtime()?;
    let clock = ManualClock::starting_at(Timestamp::from_nanos(1_000_000_000_000));
    let (store, namespace) = connect(&rt, make, &cluster, CALL_TIMEOUT, &clock)?;
    let n = 60;
    rt.block_on(execute_all(&store, (0..n).map(|i| (i, key(i))).collect())).map_err(CaseError::failed)?;
    let retries = async move {
        for round in 0..12 {
            for i in 0..n {
                let k = key(i);
                match store.begin("pay", &k, Fingerprint(7)).await {
                    Ok(Begin::Replay(r)) if r == body("A", i) => {}
                    other => {
                        return Err(format!("round {round}: a retry of (\"pay\", {k:?}) returned {}", explain(&other)))
                    }
                }
                match store.begin("pay", &k, Fingerprint(8)).await {
                    Ok(Begin::Mismatch) => {}
                    other => {
                        return Err(format!(
                            "round {round}: (\"pay\", {k:?}) with another fingerprint returned {}",
                            explain(&other)
                        ))
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    };
    cluster.reshard_while(&rt, &namespace, "the 60 records' keys", retries)
}

/// The cluster cases (level 6), for the distributed implementation `make` builds.
pub fn cluster_suite(make: RedisFactory) -> Vec<Case> {
    let case = |name, hints: Hints, run: fn(RedisFactory) -> CaseResult| {
        Case::new(EXERCISE, L6, name, hints, THREADED, move || run(make)).with_redis()
    };
    vec![
        case("spread_over_masters", Hints::new(
            "1,000 records on a 3-master Redis Cluster: each begins, completes and replays, no call is refused with \
             CROSSSLOT, and every master holds some of the keys.",
            "A script's keys must share a slot. One tag for the whole namespace puts the whole store on one master, and a \
             namespace-wide token counter next to record-tagged keys is a CROSSSLOT error.",
            "connect_cluster with harness::redis_server::connect_cluster_with_timeout (RedisConnection wraps either kind); \
             name a record's keys <record_tag(namespace, scope, key)>:..., its fence (last token) included."),
            spread_over_masters),
        case("failover_fencing", Hints::new(
            "A master is killed after its replica was cut off. Responses that complete acknowledged must replay after the \
             failover; a lease the failover lost may execute again, but the first executor's late complete is refused.",
            "Asynchronous replication loses the last writes: make the one that must not be lost (the stored response) \
             wait for a replica, and make tokens per record increase across the loss so a stale executor is fenced.",
            "After the complete script on a cluster, send WAIT 1 <timeout ms> routed to the record's master \
             (ClusterConnection::route_command with the slot's route) and answer Unavailable if 0 replicas acknowledged; \
             token = max(fence + 1, now in µs)."),
            failover_fencing),
        case("resharding", Hints::new(
            "Slots holding records move to another master (MIGRATING/IMPORTING, one key at a time) while retries of those \
             records run: every call succeeds and answers right.",
            "During a move a slot is split: single keys answer ASK, a script over keys on both sides answers TRYAGAIN, and \
             afterwards the old owner answers MOVED.",
            "Keep a record's keys in one slot and let the cluster client follow ASK/MOVED and retry TRYAGAIN within your \
             timeout."),
            resharding),
    ]
}
