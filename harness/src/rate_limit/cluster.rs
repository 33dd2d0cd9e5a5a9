//! Level 6 of the rate-limit exercise: the Redis contract on a real Redis Cluster
//! (3 masters, 3 replicas, see [`crate::redis_cluster`]). Tenants spread over the
//! masters with no CROSSSLOT; a master killed after writes it acknowledged were cut off
//! from its replica (calls fail typed and fast, recover after the promotion, and
//! over-admit at most the stated burst); slots moved while calls run.

use std::sync::Arc;
use std::time::Duration;

use super::contract::{Decision, Quota, RedisLimitError, RedisLimiterConfig, WhenUnavailable, CLUSTER_RECOVERY};
use super::model::START;
use super::suite::EXERCISE;
use super::{ErasedRedisLimiter, RedisFactory};
use crate::clock::{ManualClock, Stopwatch};
use crate::redis_cluster::{explain_crossslot, RedisCluster, RECOVERY_DEADLINE};
use crate::redis_server::{fresh_namespace, runtime, RedisTarget, CALL_TIMEOUT, OUTAGE_CALL_TIMEOUT};
use crate::suite::{Case, CaseError, CaseResult, Hints, Level, THREADED_DEADLINE as THREADED};

pub const L6: Level = Level { number: 6, name: "cluster" };

/// Longest a call may take on a cluster before it counts as hung: ten times the
/// outage cases' timeout, as on one server.
const HUNG: Duration = Duration::from_secs(5);

/// A call's answer, or `Err` if it had not returned after [`HUNG`].
type Bounded = Result<Result<Decision, RedisLimitError>, tokio::time::error::Elapsed>;

/// The three buckets of one request of `tenant` (the seed question's user, endpoint
/// and tenant limits), all with `quota`.
fn request(tenant: &str, quota: Quota) -> Vec<(String, Quota)> {
    vec![(format!("user:{tenant}:42"), quota), ("endpoint:/pay".to_string(), quota), ("tenant".to_string(), quota)]
}

/// Tenant names from the whole domain: digits, separators, braces (which must not
/// end a hash tag), Unicode.
fn tenant(i: usize) -> String {
    match i % 5 {
        0 => format!("svc-{i}"),
        1 => format!("{i}"),
        2 => format!("a}}{i}:{{b"),
        3 => format!("débit-€-{i}"),
        _ => format!("team/{i}\\x"),
    }
}

fn connect(
    rt: &tokio::runtime::Runtime,
    make: RedisFactory,
    cluster: &RedisCluster,
    config: RedisLimiterConfig,
    clock: &ManualClock,
) -> Result<Arc<dyn ErasedRedisLimiter>, CaseError> {
    rt.block_on(make(RedisTarget::Cluster(cluster.seeds().to_vec()), config, clock.shared()))
        .map_err(|e| CaseError::failed(format!("connect_cluster({:?}): {e}", cluster.seeds())))
}

fn config(timeout: Duration) -> RedisLimiterConfig {
    RedisLimiterConfig { namespace: fresh_namespace("cluster"), timeout, when_unavailable: WhenUnavailable::FailClosed }
}

fn explain(e: &RedisLimitError) -> String {
    explain_crossslot(format!("Err({e})"), "tenant")
}

/// What a fresh 3-bucket request of cost 1 answers the n-th time (1-based) with the
/// clock standing still: allowed while the burst lasts, then denied for one period.
fn expected(n: u32, quota: Quota) -> Decision {
    let b = quota.burst();
    if n <= b {
        Decision {
            allowed: true,
            remaining: b - n,
            retry_after: Duration::ZERO,
            reset_after: quota.period() * n,
            limiting: 0,
        }
    } else {
        Decision {
            allowed: false,
            remaining: 0,
            retry_after: quota.period(),
            reset_after: quota.period() * b,
            limiting: 0,
        }
    }
}

/// Runs `checks` cost-1 checks for each tenant (tenants at once, each in order) and
/// holds every answer to [`expected`] after `done` earlier ones.
async fn spend(
    limiter: &Arc<dyn ErasedRedisLimiter>,
    tenants: &[String],
    quota: Quota,
    done: u32,
    checks: u32,
) -> Result<(), String> {
    let tasks: Vec<_> = tenants
        .iter()
        .map(|t| {
            let (limiter, t) = (Arc::clone(limiter), t.clone());
            tokio::spawn(async move {
                let limits = request(&t, quota);
                for n in done + 1..=done + checks {
                    let got = limiter.check(&t, &limits, 1).await.map_err(|e| {
                        format!("tenant {t:?}: check #{n} of a 3-bucket request returned {}", explain(&e))
                    })?;
                    let want = expected(n, quota);
                    if got != want {
                        return Err(format!(
                            "tenant {t:?}: check #{n} (cost 1, buckets {:?}, clock standing still) returned {got:?}, \
                             expected {want:?}",
                            limits.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>()
                        ));
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

/// 100 tenants: every answer exact, no CROSSSLOT, and every master holds keys.
fn spread_over_masters(make: RedisFactory) -> CaseResult {
    let cluster = RedisCluster::start()?;
    let rt = runtime()?;
    let clock = ManualClock::starting_at(START);
    let config = config(CALL_TIMEOUT);
    let namespace = config.namespace.clone();
    let limiter = connect(&rt, make, &cluster, config, &clock)?;
    let quota = Quota::new(3, Duration::from_secs(3600)).expect("valid");
    let tenants: Vec<String> = (0..100).map(tenant).collect();
    rt.block_on(spend(&limiter, &tenants, quota, 0, 4)).map_err(CaseError::failed)?;
    // Distinct (tenant, key) pairs whose naive `{ns:tenant}:key` names would collide.
    let one = Quota::new(1, Duration::from_secs(3600)).expect("valid");
    let first = rt.block_on(limiter.check("x}:y", &[("z".to_string(), one)], 1));
    let second = rt.block_on(limiter.check("x", &[("y}:z".to_string(), one)], 1));
    match (&first, &second) {
        (Ok(a), Ok(b)) if a.allowed && b.allowed => {}
        _ => {
            return Err(CaseError::failed(format!(
                "tenant \"x}}:y\" key \"z\" and tenant \"x\" key \"y}}:z\" are two buckets (1/1h each): the first check of \
                 each must be allowed, got {first:?} and {second:?}. Encode the tenant injectively in the tag"
            )))
        }
    }
    cluster.require_spread(
        &namespace,
        "100 tenants checked",
        "Tag keys by tenant ({namespace:tenant}), not by namespace, so tenants spread over the cluster",
    )
}

/// Kill a master whose replica was cut off: typed errors within the timeout while it
/// is down, decisions again within CLUSTER_RECOVERY of the promotion, and at most one
/// extra burst per bucket.
fn failover(make: RedisFactory) -> CaseResult {
    let mut cluster = RedisCluster::start()?;
    cluster.require_owned("kill")?;
    let rt = runtime()?;
    let clock = ManualClock::starting_at(START);
    // Two instances on one namespace: `limiter`, with the timeout of cases not about
    // outages, makes every call while the masters are up (a busy machine must not fake
    // an outage); `outage`, with the short one, makes the calls while one is down.
    let live = config(CALL_TIMEOUT);
    let short = RedisLimiterConfig { timeout: OUTAGE_CALL_TIMEOUT, ..live.clone() };
    let limiter = connect(&rt, make, &cluster, live, &clock)?;
    let outage = connect(&rt, make, &cluster, short, &clock)?;
    let quota = Quota::new(4, Duration::from_secs(3600)).expect("valid");
    let tenants: Vec<String> = (0..30).map(tenant).collect();
    rt.block_on(spend(&limiter, &tenants, quota, 0, 2))
        .map_err(|e| CaseError::failed(format!("before the failover: {e}")))?;
    // `outage` has connected to every master before one dies (a peek changes nothing).
    for t in &tenants {
        rt.block_on(outage.check(t, &request(t, quota), 0)).map_err(|e| {
            CaseError::failed(format!("before the failover, a peek for tenant {t:?} returned {}", explain(&e)))
        })?;
    }
    let victim = cluster.masters()?[0].port;
    let replica = cluster.sever_replica(victim)?;
    // Acknowledged by the victim only: lost in the failover.
    let unreplicated = rt.block_on(spend(&limiter, &tenants, quota, 2, 2));
    // The master dies before its replica runs again: what only it had is lost.
    cluster.kill(victim)?;
    cluster.resume(replica)?;
    unreplicated.map_err(|e| CaseError::failed(format!("with every master up (one replica cut off): {e}")))?;
    // While the victim is down (every tenant at once, before its replica can be
    // promoted): each call returns within the timeout, typed; a peek changes nothing.
    let peeks: Vec<(String, Duration, Bounded)> = rt.block_on(async {
        let tasks: Vec<_> = tenants
            .iter()
            .map(|t| {
                let (outage, t) = (Arc::clone(&outage), t.clone());
                tokio::spawn(async move {
                    let limits = request(&t, quota);
                    let started = Stopwatch::start();
                    let answer = tokio::time::timeout(HUNG, outage.check(&t, &limits, 0)).await;
                    (t, started.elapsed(), answer)
                })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.extend(task.await.ok());
        }
        out
    });
    let mut down = Vec::new();
    for (t, took, answer) in peeks {
        match answer {
            Err(_) => {
                return Err(CaseError::failed(format!(
                "with a master killed, a peek for tenant {t:?} had not returned after {HUNG:?} (timeout configured: \
                     {OUTAGE_CALL_TIMEOUT:?}): bound every call with the timeout"
            )))
            }
            Ok(Err(RedisLimitError::Unavailable(_))) => down.push(t),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(CaseError::failed(format!(
                    "with a master killed, a peek for tenant {t:?} returned {} after {took:?}: expected a decision, or \
                     Err(Unavailable) if its keys live on the dead master",
                    explain(&e)
                )))
            }
        }
    }
    if down.is_empty() || down.len() == tenants.len() {
        return Err(CaseError::failed(format!(
            "one of 3 masters was killed and {} of {} tenants got Unavailable: tenants should spread over the masters, \
             and tenants on live masters keep deciding",
            down.len(),
            tenants.len()
        )));
    }
    cluster.wait_promoted(replica)?;
    let promoted = Stopwatch::start();
    for (t, limiter) in down.iter().flat_map(|t| [(t, &outage), (t, &limiter)]) {
        let limits = request(t, quota);
        loop {
            let answer = rt.block_on(async { tokio::time::timeout(HUNG, limiter.check(t, &limits, 0)).await });
            if let Ok(Ok(_)) = answer {
                break;
            }
            if promoted.elapsed() > RECOVERY_DEADLINE {
                return Err(CaseError::failed(format!(
                    "the dead master's replica was promoted {:?} ago (the cluster says ok), but a peek for tenant {t:?} \
                     still returns {answer:?}: the client must learn the new topology within {CLUSTER_RECOVERY:?} (the \
                     redis crate's cluster client does on a refused connection)",
                    promoted.elapsed()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Spend what each bucket still admits: 0 for tenants on healthy masters; for the
    // failed-over ones, what the lost writes had spent (at most one more burst).
    for t in &tenants {
        let limits = request(t, quota);
        let (mut more, mut unanswered) = (0, 0);
        for _ in 0..3 * quota.burst() {
            match rt.block_on(limiter.check(t, &limits, 1)) {
                Ok(d) if d.allowed => more += 1,
                Ok(_) => break,
                // No answer in time: it may have spent or not. Not counted (so `more`
                // can only be short, never a false excess), and tried again.
                Err(RedisLimitError::Unavailable(_)) if unanswered < 20 => unanswered += 1,
                Err(e) => {
                    return Err(CaseError::failed(format!(
                        "after the failover, tenant {t:?}'s check returned {}",
                        explain(&e)
                    )))
                }
            }
        }
        let total = 4 + more;
        let bound = if down.contains(t) { 2 * quota.burst() } else { quota.burst() };
        if total > bound {
            return Err(CaseError::failed(format!(
                "tenant {t:?} ({quota:?} buckets, clock standing still) was allowed {total} requests in all, {} a failover \
                 of its master: at most {bound} (B·(1 + failovers)). A failover loses at most the writes not yet replicated, \
                 which brings a bucket back to an earlier state, never fuller than full",
                if down.contains(t) { "across" } else { "without" }
            )));
        }
    }
    Ok(())
}

/// Slots holding tenants' keys move to another master while those tenants' checks
/// run: every answer exact, no error.
fn resharding(make: RedisFactory) -> CaseResult {
    let cluster = RedisCluster::start()?;
    cluster.require_owned("reshard")?;
    let rt = runtime()?;
    let clock = ManualClock::starting_at(START);
    let config = config(CALL_TIMEOUT);
    let namespace = config.namespace.clone();
    let limiter = connect(&rt, make, &cluster, config, &clock)?;
    let quota = Quota::new(40, Duration::from_secs(3600)).expect("valid");
    let tenants: Vec<String> = (0..40).map(tenant).collect();
    rt.block_on(spend(&limiter, &tenants, quota, 0, 1)).map_err(CaseError::failed)?;
    let calls = {
        let limiter = Arc::clone(&limiter);
        async move {
            // Slowly, so the moves happen between and during calls.
            let mut done = 1;
            while done < quota.burst() + 3 {
                spend(&limiter, &tenants, quota, done, 1).await?;
                done += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        }
    };
    cluster.reshard_while(&rt, &namespace, "the 40 tenants' keys", calls)
}

/// The cluster cases (level 6), for the distributed implementation `make` builds.
pub fn cluster_suite(make: RedisFactory) -> Vec<Case> {
    let case = |name, hints: Hints, run: fn(RedisFactory) -> CaseResult| {
        Case::new(EXERCISE, L6, name, hints, THREADED, move || run(make)).with_redis()
    };
    vec![
        case("spread_over_masters", Hints::new(
            "100 tenants on a 3-master Redis Cluster: every answer exact, no call refused with CROSSSLOT, and every master \
             holds some of the keys. Tenants \"x}:y\" with key \"z\" and \"x\" with key \"y}:z\" are two buckets.",
            "A multi-key script needs all its keys in one slot; one hash tag for the whole namespace puts the whole limiter \
             on one master, and any key shared by all tenants next to tenant-tagged keys is a CROSSSLOT error.",
            "connect_cluster with harness::redis_server::connect_cluster_with_timeout (RedisConnection wraps either kind); \
             name every key <tenant_tag(namespace, tenant)>:..., the tenant's latest time included."),
            spread_over_masters),
        case("failover", Hints::new(
            "A master is killed after its replica was cut off (what it acknowledged since is lost). While it is down, calls \
             on its tenants return Err(Unavailable) within the timeout and others keep deciding; within CLUSTER_RECOVERY of \
             the promotion every tenant decides again; no bucket admits more than B·(1 + failovers).",
            "Replication is asynchronous: a failover can roll a bucket back to before its last writes, never past full. \
             A cluster client re-learns the topology after a refused connection or a MOVED.",
            "Bound every call with tokio::time::timeout(config.timeout, ..) and map errors to Unavailable; the redis crate's \
             cluster client reconnects and refreshes its slot map by itself."),
            failover),
        case("resharding", Hints::new(
            "Slots holding tenants' keys move to another master (MIGRATING/IMPORTING, one key at a time) while the tenants' \
             checks run: every call succeeds and every answer is exact.",
            "During a move a slot is split: single keys answer ASK, a script over keys on both sides answers TRYAGAIN, and \
             afterwards the old owner answers MOVED.",
            "Keep a request's keys in one slot and let the cluster client follow ASK/MOVED and retry TRYAGAIN within your \
             timeout."),
            resharding),
    ]
}
