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
use crate::redis_cluster::{explain_crossslot, node_command, RedisCluster, RECOVERY_DEADLINE};
use crate::redis_server::{fresh_namespace, runtime, RedisTarget, CALL_TIMEOUT};
use crate::suite::{Case, CaseError, CaseResult, Hints, Level, THREADED_DEADLINE as THREADED};

pub const L6: Level = Level { number: 6, name: "cluster" };

/// Longest a call may take before it counts as hung (ten times the outage timeout).
const HUNG: Duration = Duration::from_secs(5);

/// Leases `failover_fencing` has its failover lose (begun with Execute on the killed
/// master after its replica was cut off): the fence is tested on each.
const LOST_LEASES: usize = 3;

/// How long `failover_fencing` keeps beginning new keys to get [`LOST_LEASES`]: each
/// begin has [`CALL_TIMEOUT`], so only a store that never begins on that master
/// without a replica runs out of it.
const CUT_LIMIT: Duration = Duration::from_secs(60);

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

/// The lease the cases' stores are configured with.
const LEASE: Duration = Duration::from_secs(30);

fn connect(
    rt: &tokio::runtime::Runtime,
    make: RedisFactory,
    cluster: &RedisCluster,
    timeout: Duration,
    clock: &ManualClock,
) -> Result<(Arc<dyn ErasedRedisStore>, String), CaseError> {
    let records = IdempotencyConfig::new(LEASE, Duration::from_secs(600)).expect("nonzero");
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

/// `complete`, retried while it answers Unavailable: a retried complete tells, as the
/// contract says, and its AlreadyCompleted means this token's response is stored.
fn settled(
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn ErasedRedisStore>,
    k: &str,
    token: u64,
    response: Response,
) -> Result<(), SettleError> {
    match answered(|| rt.block_on(store.complete("pay", k, token, response.clone()))) {
        Err(SettleError::Lease(LeaseError::AlreadyCompleted)) => Ok(()),
        other => other,
    }
}

/// A call whose answer must not change when repeated (a complete, a replay),
/// repeated while it answers Unavailable ("stored or not, unknown": no replica
/// acknowledged in time, or a busy machine made the call time out).
fn answered<T>(mut call: impl FnMut() -> Result<T, SettleError>) -> Result<T, SettleError> {
    let mut answer = call();
    for _ in 0..20 {
        if !matches!(answer, Err(SettleError::Unavailable(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        answer = call();
    }
    answer
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
    // 60..: begun after it (leases the failover may lose), at least up to 90.
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
    let victim_keys = || {
        node_command::<u64>(victim, &redis::cmd("DBSIZE"))
            .map_err(|e| CaseError::failed(format!("the grader's Redis Cluster: DBSIZE on {victim}: {e}")))
    };
    let replica = cluster.sever_replica(victim)?;
    // Begins one at a time, each between two counts of the victim's keys (a begin
    // does not wait for replicas: acknowledged at once, then lost with the master).
    // Fencing is only put to the test by a lease the failover loses, so new keys are
    // begun until LOST_LEASES of them answered Execute and wrote on the victim. (30
    // keys begun at once, whatever they answered, once let a store with no fence
    // pass: none of them was such a lease.)
    let (mut lost_leases, cut) = (0, Stopwatch::start());
    while before.len() < n || lost_leases < LOST_LEASES {
        let i = before.len();
        if cut.elapsed() > CUT_LIMIT {
            return Err(CaseError::failed(format!(
                "with master {victim}'s replica cut off for {CUT_LIMIT:?}, {} begins on new keys gave {lost_leases} \
                 Execute on that master: begin must not wait for replicas",
                i - 60
            )));
        }
        let keys_before = victim_keys()?;
        match rt.block_on(async { tokio::time::timeout(HUNG, store.begin("pay", &key(i), Fingerprint(7))).await }) {
            Ok(Ok(Begin::Execute(lease))) => {
                before.push(Before::Running(lease.token));
                lost_leases += usize::from(victim_keys()? > keys_before);
            }
            Ok(Err(StoreUnavailable(_))) => before.push(Before::Unknown),
            other => {
                return Err(CaseError::failed(format!(
                    "with one replica cut off, begin on new key {:?} returned {other:?}",
                    key(i)
                )))
            }
        }
    }
    // Then completes of keys begun before the cut, at once (each waits for a replica
    // it cannot get).
    let completes = rt.block_on(async {
        let mut completes = Vec::new();
        for (i, state) in before.iter().enumerate().take(60).skip(30) {
            let Before::Running(token) = *state else { unreachable!() };
            let store = Arc::clone(&store);
            completes.push(tokio::spawn(async move {
                tokio::time::timeout(HUNG, store.complete("pay", &key(i), token, body("A", i))).await
            }));
        }
        let mut out = Vec::new();
        for c in completes {
            out.push(c.await);
        }
        out
    });
    // The master dies before its replica runs again: what only it had is lost.
    cluster.kill(victim)?;
    cluster.resume(replica)?;
    for (offset, answer) in completes.into_iter().enumerate() {
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
    cluster.wait_promoted(replica)?;
    let promoted = Stopwatch::start();
    // The dead node comes back as the new master's replica (a master without one
    // cannot acknowledge a complete), and the caller's clock moves on past the
    // leases, as real time would over an outage.
    cluster.rejoin(victim)?;
    clock.advance(Duration::from_secs(61));
    for (i, state) in before.iter().enumerate() {
        let k = key(i);
        // Whether an attempt below went unanswered (Unavailable or hung): it may still
        // have begun an executor whose token never reached us.
        let mut unanswered = false;
        let retry = loop {
            match rt.block_on(async { tokio::time::timeout(HUNG, store.begin("pay", &k, Fingerprint(7))).await }) {
                // That unknown executor holds the lease: move the clock past it, as a
                // client retrying later would.
                Ok(Ok(Begin::InFlight { .. })) if unanswered => clock.advance(LEASE + Duration::from_secs(1)),
                Ok(Ok(begun)) => break begun,
                other if promoted.elapsed() > RECOVERY_DEADLINE => {
                    return Err(CaseError::failed(format!(
                        "the dead master's replica was promoted {:?} ago (the cluster says ok), but begin(\"pay\", \
                         {k:?}) still returns {other:?}: the client must learn the new topology within \
                         {CLUSTER_RECOVERY:?}",
                        promoted.elapsed()
                    )))
                }
                _ => {
                    unanswered = true;
                    std::thread::sleep(Duration::from_millis(50))
                }
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
            let late = answered(|| rt.block_on(store.complete("pay", &k, old, body("A", i))));
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
        let replay = answered(|| rt.block_on(store.begin("pay", &k, Fingerprint(7))).map_err(SettleError::Unavailable));
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
