//! Level 5 of the rate-limit exercise: the same contract on Redis. Replays of the model
//! with every key's lifetime audited, instances with skewed clocks sharing buckets,
//! outages (fail-open and fail-closed), expiry against real time, round trips.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::contract::{
    tenant_tag, Decision, Quota, RedisLimitError, RedisLimiterConfig, WhenUnavailable, FAIL_OPEN, REDIS_EXPIRY_MARGIN,
    REDIS_EXPIRY_SLACK,
};
use super::model::{quota, Config, Model, Op, Output, RateLimitSpec, REDIS_QUOTAS, START};
use super::suite::{apply_clock, check, edge_scenarios, random_ops, EXERCISE, L5};
use super::{ErasedRedisLimiter, RedisFactory};
use crate::clock::{ManualClock, Stopwatch, Timestamp};
use crate::redis_server::{
    check_tagged_keys, fresh_namespace, runtime, within_reconnect_window, CommandCounter, RedisServer, RedisTarget,
    CALL_TIMEOUT, OUTAGE_CALL_TIMEOUT,
};
use crate::sequential::{random, replay, Budget, Spec};
use crate::suite::{Case, CaseError, CaseResult, Hints, THREADED_DEADLINE as THREADED};

/// The tenant of the single-server cases' requests (the cluster level spreads many).
const TENANT: &str = "tenant-9";

fn redis_config(namespace: String, when_unavailable: WhenUnavailable) -> RedisLimiterConfig {
    RedisLimiterConfig { namespace, timeout: CALL_TIMEOUT, when_unavailable }
}

fn apply_redis(rt: &tokio::runtime::Runtime, limiter: &dyn ErasedRedisLimiter, clock: &ManualClock, op: &Op) -> Output {
    match op {
        Op::Check { limits, cost } => {
            let limits: Vec<(String, Quota)> = limits.iter().map(|&(k, q)| (format!("k{k}"), quota(q))).collect();
            Output::Decided(rt.block_on(limiter.check(TENANT, &limits, *cost)).map_err(|e| match e {
                RedisLimitError::Invalid(e) => e,
                // Not a decision the model can make: show it as a failure at this step.
                RedisLimitError::Unavailable(why) => panic!("Redis unavailable during a replay: {why}"),
            }))
        }
        Op::Advance(_) | Op::Rewind(_) => apply_clock(clock, op),
    }
}

/// Keys of `namespace` (those starting with `{namespace:`) and their PTTL in ms (-1: none).
fn namespace_ttls(
    rt: &tokio::runtime::Runtime,
    raw: &mut redis::aio::MultiplexedConnection,
    namespace: &str,
) -> Result<Vec<(String, i64)>, String> {
    let ttls = rt.block_on(crate::redis_server::namespace_ttls(raw, namespace)).map_err(|e| e.to_string())?;
    let prefix = format!("{{{namespace}:");
    Ok(ttls.into_iter().filter(|(key, _)| key.starts_with(&prefix)).collect())
}

/// Checks the lifetime of a namespace's keys after each op of a Redis replay, against
/// a shadow of the model: every bucket in debt has a key of its own that lives at
/// least until the bucket is full again plus [`REDIS_EXPIRY_MARGIN`] (less the real
/// time since it was written), no key lives longer than its bucket's τ +
/// [`REDIS_EXPIRY_SLACK`], and at most one key (the latest time) has no expiry. Keys
/// are matched to buckets by lifetime, not by name.
struct ExpiryAudit {
    raw: redis::aio::MultiplexedConnection,
    namespace: String,
    model: Model,
    /// Every bucket named so far, with its quota.
    named: BTreeMap<u8, Quota>,
    /// When each bucket was last written (real time, taken before the call).
    written: BTreeMap<u8, Stopwatch>,
}

impl ExpiryAudit {
    fn after(&mut self, rt: &tokio::runtime::Runtime, op: &Op, started: Stopwatch) -> Result<(), String> {
        let output = RateLimitSpec::step(&mut self.model, op);
        let Op::Check { limits, cost } = op else { return Ok(()) };
        for &(k, q) in limits {
            self.named.insert(k, quota(q));
        }
        if matches!(output, Output::Decided(Ok(d)) if d.allowed && *cost > 0) {
            for &(k, _) in limits {
                self.written.insert(k, started);
            }
        }
        let ttls = namespace_ttls(rt, &mut self.raw, &self.namespace)?;
        let show_keys = || ttls.iter().map(|(k, t)| format!("{k} PTTL {t}")).collect::<Vec<_>>().join(", ");
        let forever = ttls.iter().filter(|(_, t)| *t < 0).count();
        if forever > 1 {
            return Err(format!(
                "keys without expiry: {}. Every bucket key needs an expiry; only the tenant's latest time may live forever",
                show_keys()
            ));
        }
        let ms = |d: u64| d / 1_000_000;
        // Longest first: greedy matching of the longest lifetimes to the largest caps.
        let mut lives: Vec<u64> = ttls.iter().filter(|(_, t)| *t >= 0).map(|(_, t)| *t as u64).collect();
        lives.sort_unstable_by(|a, b| b.cmp(a));
        let slack = REDIS_EXPIRY_SLACK.as_nanos() as u64;
        let mut caps: Vec<u64> = self.named.values().map(|q| ms(q.tolerance_nanos() + slack)).collect();
        caps.sort_unstable_by(|a, b| b.cmp(a));
        // The latest-time key may take any lifetime if it is not already the one without.
        let fits = |lives: &[u64]| lives.len() <= caps.len() && lives.iter().zip(&caps).all(|(l, c)| l <= c);
        if !(fits(&lives) || (forever == 0 && !lives.is_empty() && fits(&lives[1..]))) {
            let named: Vec<String> = self.named.iter().map(|(k, q)| format!("k{k} {q:?}")).collect();
            return Err(format!(
                "keys live too long: {}; the buckets named so far ({}) may live at most τ + {REDIS_EXPIRY_SLACK:?} each",
                show_keys(),
                named.join(", ")
            ));
        }
        let now = self.model.latest.as_nanos();
        let mut needs: Vec<(u64, u8)> = self
            .model
            .tats
            .iter()
            .map(|(&k, &tat)| {
                let elapsed = self.written.get(&k).map_or(0, |w| w.elapsed().as_nanos() as u64);
                let life = tat - now + REDIS_EXPIRY_MARGIN.as_nanos() as u64;
                // Whole ms either way (Redis counts in ms, the script in µs): 2ms of rounding.
                (ms(life.saturating_sub(elapsed)).saturating_sub(2), k)
            })
            // A bucket whose debt real time has already outlived may be gone.
            .filter(|&(need, _)| need > 0)
            .collect();
        needs.sort_unstable_by(|a, b| b.cmp(a));
        // A key without expiry is the latest time's (a bucket key must have one).
        let mut available = lives;
        available.sort_unstable_by(|a, b| b.cmp(a));
        let short = needs.iter().enumerate().find(|&(i, &(need, _))| available.get(i).is_none_or(|&a| a < need));
        if let Some((_, &(need, k))) = short {
            return Err(format!(
                "bucket k{k} is in debt (until its TAT), so its key must live {}ms more (the debt + {REDIS_EXPIRY_MARGIN:?} \
                 since it was written), but Redis holds no key for it that lives that long: {}. \
                 A bucket key must outlive its debt by {REDIS_EXPIRY_MARGIN:?}, or the bucket comes back full",
                need + 2,
                if ttls.is_empty() { "no keys at all".to_string() } else { show_keys() },
            ));
        }
        Ok(())
    }
}

fn redis_sequences(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = &runtime()?;
    let replay_redis = |ops: &[Op]| {
        replay::<RateLimitSpec, _>(&Config, ops, |_| {
            let clock = ManualClock::starting_at(START);
            let namespace = fresh_namespace("seq");
            let config = redis_config(namespace.clone(), WhenUnavailable::FailClosed);
            let limiter = rt
                .block_on(make(RedisTarget::Server(server.url().to_string()), config, clock.shared()))
                .unwrap_or_else(|e| panic!("connect({}) failed: {e}", server.url()));
            let raw = rt
                .block_on(async { redis::Client::open(server.url())?.get_multiplexed_async_connection().await })
                .unwrap_or_else(|e| panic!("the grader's own connection to {} failed: {e}", server.url()));
            let mut audit = ExpiryAudit {
                raw,
                namespace,
                model: RateLimitSpec::model(&Config),
                named: BTreeMap::new(),
                written: BTreeMap::new(),
            };
            move |op: &Op| {
                let started = Stopwatch::start();
                let output = apply_redis(rt, limiter.as_ref(), &clock, op);
                if let Err(why) = audit.after(rt, op, started) {
                    panic!("after this step: {why}");
                }
                output
            }
        })
    };
    // Inputs exact on Redis only: whole microseconds, the first `REDIS_QUOTAS` quotas.
    let on_redis = |ops: &Vec<Op>| {
        ops.iter().all(|op| match op {
            Op::Advance(d) | Op::Rewind(d) => d.subsec_nanos() % 1_000 == 0,
            Op::Check { limits, .. } => limits.iter().all(|&(_, q)| q < REDIS_QUOTAS),
        })
    };
    for ops in edge_scenarios().into_iter().filter(on_redis) {
        replay_redis(&ops)?;
    }
    replay_redis(&[
        check(&[(0, 0)], 1),
        Op::Advance(Duration::from_micros(999_999)),
        check(&[(0, 0)], 1),
        Op::Advance(Duration::from_micros(1)),
        check(&[(0, 0)], 1),
    ])?;
    random(random_ops(5, 3, REDIS_QUOTAS, true, false), Budget { cases: 64, ..Budget::default() }, |ops| {
        replay_redis(ops)
    })
}

/// Expiry against real time: a bucket in debt for 300ms (400ms) must still be in debt
/// after 100ms (150ms) of real time with the test clock standing still: its key must
/// not have expired. A round whose real time ran past the debt (a very busy machine)
/// proves nothing either way and is tried again with a fresh key.
fn expiry_outlives_debt(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    let clock = ManualClock::starting_at(START);
    let namespace = fresh_namespace("expiry");
    let limiter = rt
        .block_on(make(
            RedisTarget::Server(server.url().to_string()),
            redis_config(namespace, WhenUnavailable::FailClosed),
            clock.shared(),
        ))
        .map_err(|e| CaseError::failed(format!("connect: {e}")))?;
    let checked = |limits: &[(String, Quota)], cost: u32| {
        rt.block_on(limiter.check(TENANT, limits, cost))
            .map_err(|e| CaseError::failed(format!("check returned Err({e})")))
    };
    for (burst, period, sleep) in [(10u32, 30u64, 100u64), (4, 100, 150)] {
        let q = Quota::new(burst, Duration::from_millis(period)).expect("valid");
        let debt = Duration::from_millis(period * u64::from(burst));
        for attempt in 0..3 {
            let limits = vec![(format!("sleepy-{burst}-{attempt}"), q)];
            let started = Stopwatch::start();
            let first = checked(&limits, burst)?;
            if !first.allowed {
                return Err(CaseError::failed(format!(
                    "the first check of a fresh {q:?} bucket for its whole burst: {first:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(sleep));
            let again = checked(&limits, 1)?;
            if started.elapsed() + Duration::from_millis(5) >= debt {
                // So late that even an exact expiry may have run out: try again.
                continue;
            }
            if again.allowed || again.retry_after != Duration::from_millis(period) {
                return Err(CaseError::failed(format!(
                    "a {q:?} bucket spent its whole burst (in debt for {debt:?}); {sleep}ms of real time later, the test clock not \
                     having moved, check(cost 1) returned {again:?}, expected DENIED with retry_after {period}ms: its Redis key expired \
                     too early (it must outlive the debt by {REDIS_EXPIRY_MARGIN:?})"
                )));
            }
            break;
        }
    }
    Ok(())
}

/// Instances with separate connections and skewed clocks share one bucket: together
/// they admit exactly its burst.
fn instances_share_the_burst(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    let namespace = fresh_namespace("shared");
    let skews = [0i64, 3_000, -2_000, 7_000];
    let quota = Quota::new(20, Duration::from_secs(3600)).expect("valid");
    let mut instances = Vec::new();
    for skew in skews {
        let clock =
            ManualClock::starting_at(Timestamp::from_nanos((START.as_nanos() as i64 + skew * 1_000_000) as u64));
        let config = redis_config(namespace.clone(), WhenUnavailable::FailClosed);
        let limiter = rt
            .block_on(make(RedisTarget::Server(server.url().to_string()), config, clock.shared()))
            .map_err(|e| CaseError::failed(format!("connect: {e}")))?;
        instances.push((skew, limiter));
    }
    let allowed: Vec<Result<usize, RedisLimitError>> = rt.block_on(async {
        let tasks: Vec<_> = instances
            .iter()
            .map(|(_, limiter)| {
                let limiter = Arc::clone(limiter);
                tokio::spawn(async move {
                    let limits = vec![("shared".to_string(), quota)];
                    let mut allowed = 0;
                    for _ in 0..15 {
                        if limiter.check(TENANT, &limits, 1).await?.allowed {
                            allowed += 1;
                        }
                    }
                    Ok(allowed)
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap_or_else(|e| Err(RedisLimitError::Unavailable(format!("task failed: {e}")))));
        }
        results
    });
    let mut per_instance = Vec::new();
    for result in allowed {
        per_instance.push(result.map_err(|e| CaseError::failed(format!("check on a shared key returned Err({e})")))?);
    }
    let total: usize = per_instance.iter().sum();
    if total != 20 {
        return Err(CaseError::failed(format!(
            "4 instances (clock skews {skews:?} ms) each checked a shared 20/1h bucket 15 times at once: {total} allowed in all \
             (per instance {per_instance:?}), expected exactly 20"
        )));
    }
    Ok(())
}

/// Kill Redis mid-use: calls return within the timeout with the configured answer, and
/// work again once Redis is back.
fn outage(make: RedisFactory, when_unavailable: WhenUnavailable) -> CaseResult {
    let mut server = RedisServer::start()?;
    if !server.owned() {
        return Err(CaseError::Skipped("REDIS_URL points at an external server, which this case cannot kill".into()));
    }
    let rt = runtime()?;
    let clock = ManualClock::starting_at(START);
    let config = RedisLimiterConfig {
        timeout: OUTAGE_CALL_TIMEOUT,
        ..redis_config(fresh_namespace("outage"), when_unavailable)
    };
    let limiter = rt
        .block_on(make(RedisTarget::Server(server.url().to_string()), config, clock.shared()))
        .map_err(|e| CaseError::failed(format!("connect: {e}")))?;
    let limits = vec![("user".to_string(), quota(4))];
    let checked = |limiter: &Arc<dyn ErasedRedisLimiter>| {
        // 5s: ten times the configured timeout; a call that takes longer has hung.
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), limiter.check(TENANT, &limits, 1)).await })
    };
    match checked(&limiter) {
        Ok(Ok(d)) if d.allowed => {}
        other => return Err(CaseError::failed(format!("before the outage, the first check returned {other:?}"))),
    }
    server.kill();
    let expected = match when_unavailable {
        WhenUnavailable::FailOpen => "Ok(FAIL_OPEN)",
        WhenUnavailable::FailClosed => "Err(Unavailable(..))",
    };
    for attempt in 1..=3 {
        match (when_unavailable, checked(&limiter)) {
            (_, Err(_)) => {
                return Err(CaseError::failed(format!(
                    "with Redis down, check #{attempt} had not returned after 5s (timeout configured: 500ms); expected {expected}"
                )))
            }
            (WhenUnavailable::FailOpen, Ok(Ok(d))) if d == FAIL_OPEN => {}
            (WhenUnavailable::FailClosed, Ok(Err(RedisLimitError::Unavailable(_)))) => {}
            (_, Ok(other)) => {
                return Err(CaseError::failed(format!("with Redis down, check #{attempt} returned {other:?}, expected {expected}")))
            }
        }
    }
    server.restart()?;
    // Back means a real decision again (a fail-open limiter answers FAIL_OPEN while down).
    let back = |d: &Decision| *d != FAIL_OPEN || when_unavailable == WhenUnavailable::FailClosed;
    match within_reconnect_window(|| checked(&limiter).ok()?.ok().filter(back)) {
        Some(_) => Ok(()),
        None => {
            Err(CaseError::failed("Redis was restarted, but checks still failed 5s later: the limiter must reconnect"))
        }
    }
}

/// One round trip per decision; every key hash-tagged alike and given a TTL.
fn round_trips_and_keys(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let counter = CommandCounter::start(server.url())?;
    let rt = runtime()?;
    let namespace = fresh_namespace("trips");
    let clock = ManualClock::starting_at(START);
    let limiter = rt
        .block_on(make(
            RedisTarget::Server(counter.url.clone()),
            redis_config(namespace.clone(), WhenUnavailable::FailClosed),
            clock.shared(),
        ))
        .map_err(|e| CaseError::failed(format!("connect: {e}")))?;
    let limits = vec![
        ("user-1".to_string(), quota(4)),
        ("endpoint-/pay".to_string(), quota(3)),
        ("tenant-9".to_string(), quota(5)),
    ];
    // Warm up (the first call may load the script), then count.
    let _ = rt.block_on(limiter.check(TENANT, &limits, 1));
    let before = counter.commands();
    for _ in 0..50 {
        rt.block_on(limiter.check(TENANT, &limits, 1))
            .map_err(|e| CaseError::failed(format!("check returned Err({e})")))?;
    }
    let commands = counter.commands() - before;
    if commands != 50 {
        return Err(CaseError::failed(format!(
            "50 checks of 3 buckets sent {commands} commands to Redis: expected one round trip per check"
        )));
    }
    // Buckets, plus the tenant's latest time (the one key that may never expire).
    // One tag for all of the tenant's keys, naming the namespace first (any injective
    // encoding of the tenant will do: `tenant_tag` is one).
    let first = std::cell::RefCell::new(None::<String>);
    let prefix = format!("{namespace}:");
    let expected = format!("{{{namespace}:<tenant>}}, the same for all (e.g. {})", tenant_tag(&namespace, TENANT));
    check_tagged_keys(&rt, server.url(), &namespace, 4, 1, &expected, &|tag| {
        let Some(tag) = tag.filter(|t| t.starts_with(&prefix)) else { return false };
        first.borrow_mut().get_or_insert_with(|| tag.to_string()) == tag
    })
}

/// The Redis-backed cases (level 5 on one server, level 6 on a cluster), for the
/// distributed implementation `make` builds.
pub fn redis_suite(make: RedisFactory) -> Vec<Case> {
    let case = |name, hints: Hints, run: fn(RedisFactory) -> CaseResult| {
        Case::new(EXERCISE, L5, name, hints, THREADED, move || run(make)).with_redis()
    };
    let mut cases = vec![
        case("sequences", Hints::new(
            "The in-memory contract, replayed on Redis. After every step, each bucket in debt has a Redis key of its own with \
             an expiry: it lives at least until the bucket is full again + REDIS_EXPIRY_MARGIN, at most τ + REDIS_EXPIRY_SLACK.",
            "Atomicity moves to the server: instances share the buckets, so reading, deciding and paying for all of a \
             request's buckets must be one atomic step inside Redis. Lua numbers are doubles: time travels in whole \
             microseconds.",
            "One Lua script per check (redis::Script): ARGV carries now in µs, the periods, bursts and cost; the script reads \
             the tenant's latest time and each TAT, decides with GCRA, and only if all conform writes each TAT with \
             SET key tat PX (TAT − now + margin, in ms rounded up). It returns the decision's numbers as integers."),
            redis_sequences),
        case("instances_share_the_burst", Hints::new(
            "Four instances with their own connections and clocks skewed by seconds share one bucket: together they admit \
             exactly its burst.",
            "Clock skew: an instance whose clock runs ahead would refill the bucket for everyone. A shared high-water mark of \
             time keeps every instance's view of the bucket consistent.",
            "Keep each tenant's latest time in a Redis key and use max(ARGV now, latest) as now inside the script, \
             updating it atomically with the buckets."),
            instances_share_the_burst),
        case("outage_fail_closed", Hints::new(
            "Redis is killed mid-use: in fail-closed mode every check returns Err(Unavailable) within the configured timeout, \
             and checks work again once Redis is back, without a new limiter.",
            "A dependency's outage must not become yours: every wait is bounded (no call hangs on a dead socket) and the \
             caller recovers on its own.",
            "Wrap every call, connecting included, in tokio::time::timeout(config.timeout, ..); map connection errors and \
             timeouts to RedisLimitError::Unavailable; use a reconnecting client (redis::aio::ConnectionManager)."),
            |make| outage(make, WhenUnavailable::FailClosed)),
        case("outage_fail_open", Hints::new(
            "The same outage in fail-open mode: every check returns Ok(FAIL_OPEN) within the configured timeout, and real \
             decisions come back once Redis does.",
            "Fail-open trades strictness for availability: while the limiter cannot decide, traffic goes through rather than \
             every request being refused.",
            "The same bounded call as fail-closed, then map Unavailable to Ok(FAIL_OPEN) when config.when_unavailable is \
             FailOpen."),
            |make| outage(make, WhenUnavailable::FailOpen)),
        case("expiry_outlives_debt", Hints::new(
            "Real time passes in Redis while the callers' clocks (the test's) stand still: a bucket in debt is still in debt \
             when checked again, so its key must not expire before the debt is paid plus REDIS_EXPIRY_MARGIN.",
            "Two clocks: keys expire on Redis's clock, debts are paid on the callers'. A key that lives exactly as long as \
             the debt can vanish before the callers' time reaches the end of it, and the bucket comes back full.",
            "In the script, SET the bucket key with PX = ⌈(TAT − now) / 1ms⌉ + REDIS_EXPIRY_MARGIN in ms."),
            expiry_outlives_debt),
        case("round_trips_and_keys", Hints::new(
            "One round trip to Redis per check, whatever the number of buckets; every key of a tenant carries one hash tag \
             naming the namespace and the tenant ({namespace:tenant}), and every bucket key has an expiry.",
            "Latency and Redis Cluster: a multi-key atomic operation needs all its keys in one hash slot, which a shared hash \
             tag guarantees; tagging by tenant keeps a request's buckets together while tenants spread over the cluster. \
             Every extra round trip adds a network latency to every request.",
            "redis::Script sends EVALSHA (and the script itself once, on NOSCRIPT); name keys <tenant_tag>:b:<key> and \
             <tenant_tag>:latest (tenant_tag(namespace, tenant) in the contract) and pass them all in KEYS."),
            round_trips_and_keys),
    ];
    cases.extend(super::cluster::cluster_suite(make));
    cases
}
