//! Level 5 of the window-limit exercise: the same contract on Redis. Replays of the
//! model for every algorithm with every key's lifetime audited, instances sharing
//! keys, outages (fail-open and fail-closed), expiry against real time, round trips.

use std::sync::Arc;
use std::time::Duration;

use super::contract::{
    Algorithm, RedisLimitError, RedisLimiterConfig, WhenUnavailable, WindowDecision, WindowQuota, REDIS_EXPIRY_SLACK,
};
use super::model::{quota, Config, Op, Output, WindowLimitSpec, REDIS_QUOTAS, START};
use super::suite::{apply_clock, check, edge_scenarios, random_ops, ALGORITHMS, EXERCISE, L5};
use super::{ErasedRedisWindowLimiter, RedisFactory};
use crate::clock::ManualClock;
use crate::redis_server::{
    check_namespace_keys, fresh_namespace, runtime, within_reconnect_window, CommandCounter, RedisServer, CALL_TIMEOUT,
    OUTAGE_CALL_TIMEOUT,
};
use crate::sequential::{random, replay, Budget};
use crate::suite::{Case, CaseError, CaseResult, Hints, THREADED_DEADLINE as THREADED};

fn redis_config(namespace: String, when_unavailable: WhenUnavailable) -> RedisLimiterConfig {
    RedisLimiterConfig { namespace, timeout: CALL_TIMEOUT, when_unavailable }
}

fn apply_redis(
    rt: &tokio::runtime::Runtime,
    limiter: &dyn ErasedRedisWindowLimiter,
    clock: &ManualClock,
    op: &Op,
) -> Output {
    match op {
        Op::Check { limits, cost } => {
            let limits: Vec<(String, WindowQuota)> = limits.iter().map(|&(k, q)| (format!("k{k}"), quota(q))).collect();
            Output::Decided(rt.block_on(limiter.check(&limits, *cost)).map_err(|e| match e {
                RedisLimitError::Invalid(e) => e,
                // Not a decision the model can make: show it as a failure at this step.
                RedisLimitError::Unavailable(why) => panic!("Redis unavailable during a replay: {why}"),
            }))
        }
        Op::Advance(_) | Op::Rewind(_) => apply_clock(clock, op),
    }
}

/// After each step of a Redis replay: every key of the namespace but one (the latest
/// time) has an expiry, and none lives longer than 2·W + [`REDIS_EXPIRY_SLACK`] for the
/// longest window named so far.
fn audit_lifetimes(
    rt: &tokio::runtime::Runtime,
    raw: &mut redis::aio::MultiplexedConnection,
    namespace: &str,
    longest_window: Duration,
) -> Result<(), String> {
    let ttls = rt.block_on(crate::redis_server::namespace_ttls(raw, namespace)).map_err(|e| e.to_string())?;
    let ttls: Vec<(String, i64)> =
        ttls.into_iter().filter(|(key, _)| crate::redis_server::hash_tag(key) == Some(namespace)).collect();
    let show = || ttls.iter().map(|(k, t)| format!("{k} PTTL {t}")).collect::<Vec<_>>().join(", ");
    if ttls.iter().filter(|(_, t)| *t < 0).count() > 1 {
        return Err(format!(
            "keys without expiry: {}. Every key of a limit needs an expiry; only the namespace's latest time may live forever",
            show()
        ));
    }
    let cap = (2 * longest_window + REDIS_EXPIRY_SLACK).as_millis() as i64;
    if ttls.iter().any(|(_, t)| *t > cap) {
        return Err(format!(
            "keys live too long: {}; with windows of at most {longest_window:?}, a key may live at most 2·W + \
             {REDIS_EXPIRY_SLACK:?} = {cap}ms",
            show()
        ));
    }
    Ok(())
}

fn redis_sequences(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = &runtime()?;
    let replay_redis = |algorithm: Algorithm, ops: &[Op]| {
        replay::<WindowLimitSpec, _>(&Config(algorithm), ops, |config| {
            let clock = ManualClock::starting_at(START);
            let namespace = fresh_namespace("seq");
            let limiter = rt
                .block_on(make(
                    server.url().to_string(),
                    config.0,
                    redis_config(namespace.clone(), WhenUnavailable::FailClosed),
                    clock.shared(),
                ))
                .unwrap_or_else(|e| panic!("connect({}) failed: {e}", server.url()));
            let mut raw = rt
                .block_on(async { redis::Client::open(server.url())?.get_multiplexed_async_connection().await })
                .unwrap_or_else(|e| panic!("the grader's own connection to {} failed: {e}", server.url()));
            let mut longest = Duration::ZERO;
            move |op: &Op| {
                if let Op::Check { limits, .. } = op {
                    longest = limits.iter().map(|&(_, q)| quota(q).window()).fold(longest, Duration::max);
                }
                let output = apply_redis(rt, limiter.as_ref(), &clock, op);
                if let Err(why) = audit_lifetimes(rt, &mut raw, &namespace, longest) {
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
    for algorithm in ALGORITHMS {
        // Equal times: a log holds one member per request, even at one instant.
        replay_redis(algorithm, &[check(&[(0, 2)], 1), check(&[(0, 2)], 1), check(&[(0, 2)], 1), check(&[(0, 2)], 1)])?;
        for ops in edge_scenarios().into_iter().filter(on_redis) {
            replay_redis(algorithm, &ops)?;
        }
        random(random_ops(4, 3, REDIS_QUOTAS, true, false), Budget { cases: 24, ..Budget::default() }, |ops| {
            replay_redis(algorithm, ops)
        })?;
    }
    Ok(())
}

/// Expiry against real time: a key spends its whole limit at the start of a 300ms
/// window; 400ms of real time later, the test clock not having moved, it must still be
/// refused: its keys must outlive what they count by `REDIS_EXPIRY_MARGIN`.
fn expiry_outlives_window(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    let q = WindowQuota::new(3, Duration::from_millis(300)).expect("valid");
    for algorithm in ALGORITHMS {
        let clock = ManualClock::starting_at(START);
        let namespace = fresh_namespace("expiry");
        let limiter = rt
            .block_on(make(
                server.url().to_string(),
                algorithm,
                redis_config(namespace, WhenUnavailable::FailClosed),
                clock.shared(),
            ))
            .map_err(|e| CaseError::failed(format!("connect: {e}")))?;
        let limits = vec![("sleepy".to_string(), q)];
        let checked = |cost: u32| {
            rt.block_on(limiter.check(&limits, cost)).map_err(|e| CaseError::failed(format!("check returned Err({e})")))
        };
        let first = checked(3)?;
        if !first.is_allowed() {
            return Err(CaseError::failed(format!(
                "{algorithm:?}: the first check of a fresh 3/300ms key, cost 3: {first:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(400));
        let again = checked(1)?;
        if again.is_allowed() {
            return Err(CaseError::failed(format!(
                "{algorithm:?}: a 3/300ms key spent its limit at the start of a window; 400ms of real time later, the test \
                 clock not having moved, check(cost 1) was allowed: its Redis keys expired while what they count still \
                 counts (they must outlive it by REDIS_EXPIRY_MARGIN)"
            )));
        }
    }
    Ok(())
}

/// Instances with separate connections share one key: together they admit exactly
/// its limit.
fn instances_share_the_limit(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    let q = WindowQuota::new(20, Duration::from_secs(3600)).expect("valid");
    for algorithm in ALGORITHMS {
        let namespace = fresh_namespace("shared");
        let mut instances = Vec::new();
        for _ in 0..4 {
            let clock = ManualClock::starting_at(START);
            let config = redis_config(namespace.clone(), WhenUnavailable::FailClosed);
            let limiter = rt
                .block_on(make(server.url().to_string(), algorithm, config, clock.shared()))
                .map_err(|e| CaseError::failed(format!("connect: {e}")))?;
            instances.push(limiter);
        }
        let results: Vec<Result<usize, RedisLimitError>> = rt.block_on(async {
            let tasks: Vec<_> = instances
                .iter()
                .map(|limiter| {
                    let limiter = Arc::clone(limiter);
                    tokio::spawn(async move {
                        let limits = vec![("shared".to_string(), q)];
                        let mut allowed = 0;
                        for _ in 0..15 {
                            if limiter.check(&limits, 1).await?.is_allowed() {
                                allowed += 1;
                            }
                        }
                        Ok(allowed)
                    })
                })
                .collect();
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap_or_else(|e| Err(RedisLimitError::Unavailable(format!("task: {e}")))));
            }
            results
        });
        let mut per_instance = Vec::new();
        for result in results {
            per_instance.push(result.map_err(|e| CaseError::failed(format!("check on a shared key: Err({e})")))?);
        }
        let total: usize = per_instance.iter().sum();
        if total != 20 {
            return Err(CaseError::failed(format!(
                "{algorithm:?}: 4 instances each checked a shared 20/1h key 15 times at once: {total} allowed in all (per \
                 instance {per_instance:?}), expected exactly 20"
            )));
        }
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
        .block_on(make(server.url().to_string(), Algorithm::SlidingWindowCounter, config, clock.shared()))
        .map_err(|e| CaseError::failed(format!("connect: {e}")))?;
    // Cost 1 of 1 per hour: after the first, a real decision is a denial, never the
    // fail-open answer.
    let limits = vec![("user".to_string(), WindowQuota::new(1, Duration::from_secs(3600)).expect("valid"))];
    let checked = |limiter: &Arc<dyn ErasedRedisWindowLimiter>| {
        // 5s: ten times the configured timeout; a call that takes longer has hung.
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), limiter.check(&limits, 1)).await })
    };
    match checked(&limiter) {
        Ok(Ok(WindowDecision::Allowed)) => {}
        other => return Err(CaseError::failed(format!("before the outage, the first check returned {other:?}"))),
    }
    server.kill();
    let expected = match when_unavailable {
        WhenUnavailable::FailOpen => "Ok(Allowed)",
        WhenUnavailable::FailClosed => "Err(Unavailable(..))",
    };
    for attempt in 1..=3 {
        match (when_unavailable, checked(&limiter)) {
            (_, Err(_)) => {
                return Err(CaseError::failed(format!(
                    "with Redis down, check #{attempt} had not returned after 5s (timeout configured: 500ms); expected {expected}"
                )))
            }
            (WhenUnavailable::FailOpen, Ok(Ok(WindowDecision::Allowed))) => {}
            (WhenUnavailable::FailClosed, Ok(Err(RedisLimitError::Unavailable(_)))) => {}
            (_, Ok(other)) => {
                return Err(CaseError::failed(format!(
                    "with Redis down, check #{attempt} returned {other:?}, expected {expected}"
                )))
            }
        }
    }
    server.restart()?;
    // The restarted server is empty (no persistence): the key is fresh again, so the
    // first real decision is Allowed and the next a denial, which fail-open never gives.
    let back = within_reconnect_window(|| match checked(&limiter) {
        Ok(Ok(d)) if when_unavailable == WhenUnavailable::FailClosed => Some(d),
        Ok(Ok(_)) => match checked(&limiter) {
            Ok(Ok(d @ WindowDecision::Denied { .. })) => Some(d),
            _ => None,
        },
        _ => None,
    });
    match back {
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
    for algorithm in ALGORITHMS {
        let namespace = fresh_namespace("trips");
        let clock = ManualClock::starting_at(START);
        let limiter = rt
            .block_on(make(
                counter.url.clone(),
                algorithm,
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
        let _ = rt.block_on(limiter.check(&limits, 1));
        let before = counter.commands();
        for _ in 0..50 {
            rt.block_on(limiter.check(&limits, 1))
                .map_err(|e| CaseError::failed(format!("check returned Err({e})")))?;
            clock.advance(Duration::from_millis(7));
        }
        let commands = counter.commands() - before;
        if commands != 50 {
            return Err(CaseError::failed(format!(
                "{algorithm:?}: 50 checks of 3 keys sent {commands} commands to Redis: expected one round trip per check"
            )));
        }
        // A key per limit, plus the namespace's latest time (the one that never expires).
        check_namespace_keys(&rt, server.url(), &namespace, 4, 1)?;
    }
    Ok(())
}

/// The Redis-backed cases (level 5), for the distributed implementation `make` builds.
pub fn redis_suite(make: RedisFactory) -> Vec<Case> {
    let case = |name, hints: Hints, run: fn(RedisFactory) -> CaseResult| {
        Case::new(EXERCISE, L5, name, hints, THREADED, move || run(make)).with_redis()
    };
    vec![
        case("sequences", Hints::new(
            "The in-memory contract replayed on Redis, every algorithm, several requests at one instant included. After \
             every step, every key but the namespace's latest time has an expiry of at most 2·W + REDIS_EXPIRY_SLACK.",
            "Atomicity moves to the server: reading, deciding and recording for all of a request's keys must be one atomic \
             step inside Redis. A sorted set keyed by time holds one member per distinct member string: two requests at one \
             instant need two members.",
            "One Lua script per check: ARGV carries now in µs, the windows, limits and cost; the script reads the latest \
             time, decides every key, and only if all allow records: ZADD with a unique member (time, a sequence, the cost), \
             HINCRBY on the window's counter, with PEXPIRE on every key written."),
            redis_sequences),
        case("instances_share_the_limit", Hints::new(
            "Four instances with their own connections share one key, every algorithm: together they admit exactly its limit.",
            "State shared through Redis is only consistent if each decision is one atomic step there.",
            "Do the read, the decision and the write in one script; never GET in one call and INCR in the next."),
            instances_share_the_limit),
        case("outage_fail_closed", Hints::new(
            "Redis is killed mid-use: in fail-closed mode every check returns Err(Unavailable) within the configured timeout, \
             and checks work again once Redis is back, without a new limiter.",
            "Every wait on a dependency is bounded, and the client reconnects on its own.",
            "Wrap every call in tokio::time::timeout(config.timeout, ..); map connection errors and timeouts to \
             Unavailable; use a reconnecting client (redis::aio::ConnectionManager)."),
            |make| outage(make, WhenUnavailable::FailClosed)),
        case("outage_fail_open", Hints::new(
            "The same outage in fail-open mode: every check returns Ok(Allowed) within the configured timeout, and real \
             decisions come back once Redis does.",
            "Fail-open trades strictness for availability: while the limiter cannot decide, traffic goes through.",
            "The same bounded call as fail-closed, then map Unavailable to Ok(Allowed) when config.when_unavailable is \
             FailOpen."),
            |make| outage(make, WhenUnavailable::FailOpen)),
        case("expiry_outlives_window", Hints::new(
            "Real time passes in Redis while the callers' clocks stand still: a key that spent its limit is still refused \
             when checked again, so its Redis keys must not expire before what they count stops counting, plus \
             REDIS_EXPIRY_MARGIN.",
            "Two clocks: keys expire on Redis's clock, windows end on the callers'. A key that lives exactly until the end of \
             its window can vanish before the callers' time reaches it.",
            "PEXPIRE every key written to ⌈(end − now) / 1ms⌉ + REDIS_EXPIRY_MARGIN, where end is when it stops counting: \
             the end of the window (fixed), of the next window (counter), last entry + W (log)."),
            expiry_outlives_window),
        case("round_trips_and_keys", Hints::new(
            "One round trip to Redis per check, whatever the number of keys or the algorithm; every key of the namespace \
             carries the hash tag {namespace}, and every key but the latest time has an expiry.",
            "Latency and Redis Cluster: a multi-key atomic script needs all its keys in one hash slot, which a shared hash tag \
             guarantees; every extra round trip adds a network latency to every request.",
            "redis::Script sends EVALSHA (and the script once, on NOSCRIPT); name keys {namespace}:<key> and \
             {namespace}:latest and pass them all in KEYS."),
            round_trips_and_keys),
    ]
}
