//! Level 5 of the idempotency exercise: the same contract on Redis. Replays of the
//! model, every key's `PTTL` audited after every call, expiry against real time, one
//! executor across instances, outages with data loss, round trips.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::contract::{
    record_tag, Begin, Fingerprint, IdempotencyConfig, Lease, LeaseError, RedisStoreConfig, Response, SettleError,
    StoreUnavailable, REDIS_EXPIRY_GRACE, REDIS_MAX_DURATION,
};
use super::model::{id, response, IdempotencySpec, Op, Output};
use super::suite::{config, edge_scenarios, random_ops, EXERCISE, L5};
use super::{BoxFuture, ErasedRedisStore, RedisFactory};
use crate::clock::{ManualClock, Stopwatch, Timestamp};
use crate::isolation::trying;
use crate::linearizability::SplitMix;
use crate::redis_server::{
    check_tagged_keys, fresh_namespace, runtime, within_reconnect_window, CommandCounter, RedisServer, RedisTarget,
    CALL_TIMEOUT, OUTAGE_CALL_TIMEOUT,
};
use crate::sequential::{random, replay, Budget, Spec};
use crate::suite::{guarded, with_hint, Case, CaseError, CaseResult, Hints, THREADED_DEADLINE as THREADED};

/// `d` rounded up to whole microseconds, at most [`REDIS_MAX_DURATION`].
fn redis_duration(d: Duration) -> Duration {
    Duration::from_micros(u64::try_from(d.as_nanos().div_ceil(1_000)).unwrap_or(u64::MAX)).min(REDIS_MAX_DURATION)
}

/// A scenario in whole microseconds within [`REDIS_MAX_DURATION`]: with the clock
/// starting at zero, every time the model sees is one Redis can be told exactly.
fn redis_scenario(config: &IdempotencyConfig, ops: &[Op]) -> (IdempotencyConfig, Vec<Op>) {
    let config = IdempotencyConfig::new(redis_duration(config.lease()), redis_duration(config.retention()))
        .expect("rounding up keeps durations nonzero");
    let ops = ops
        .iter()
        .map(|op| match op {
            Op::Advance(d) => Op::Advance(redis_duration(*d)),
            other => other.clone(),
        })
        .collect();
    (config, ops)
}

fn redis_config(records: IdempotencyConfig) -> RedisStoreConfig {
    RedisStoreConfig { namespace: fresh_namespace("idem"), timeout: CALL_TIMEOUT, records }
}

fn connect(
    rt: &tokio::runtime::Runtime,
    make: RedisFactory,
    url: &str,
    config: RedisStoreConfig,
    clock: &ManualClock,
) -> Result<Arc<dyn ErasedRedisStore>, CaseError> {
    rt.block_on(make(RedisTarget::Server(url.to_string()), config, clock.shared()))
        .map_err(|e| CaseError::failed(format!("connect({url}): {e}")))
}

/// Redis tokens only have to increase per record, not to count from 1: the replay
/// driver shows the n-th token issued as n (and a token that fails to increase on its
/// record as 0), and maps the model's token n back to the n-th real one.
#[derive(Default)]
struct TokenOrder {
    issued: Vec<(u16, u64)>,
}

impl TokenOrder {
    fn rank(&mut self, id: u16, token: u64) -> u64 {
        if self.issued.iter().any(|&(i, t)| i == id && token <= t) {
            return 0;
        }
        self.issued.push((id, token));
        self.issued.len() as u64
    }

    fn real(&self, model_token: u64) -> u64 {
        // A token never issued stays one: far above any real token.
        usize::try_from(model_token)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.issued.get(i).map(|&(_, t)| t))
            .unwrap_or(u64::MAX - model_token)
    }
}

/// Whether every token `ops` presents is one issued for the same record (or never
/// issued): on Redis, tokens of different records may be equal, so presenting one
/// record's token to another is outside the contract (see `RedisIdempotencyStore`).
fn tokens_stay_with_their_records(config: &IdempotencyConfig, ops: &[Op]) -> bool {
    let mut model = IdempotencySpec::model(config);
    let mut owner: Vec<u16> = Vec::new();
    for op in ops {
        let presented = match op {
            Op::Complete { id, token, .. } | Op::Abandon { id, token } => Some((*id, *token)),
            _ => None,
        };
        if let Some((id, token)) = presented {
            let issued = usize::try_from(token).ok().and_then(|t| t.checked_sub(1)).and_then(|i| owner.get(i));
            if issued.is_some_and(|&o| o != id) {
                return false;
            }
        }
        if let (Op::Begin { id, .. }, Output::Began(Begin::Execute(_))) = (op, IdempotencySpec::step(&mut model, op)) {
            owner.push(*id);
        }
    }
    true
}

fn unavailable_in_replay(e: impl fmt::Display) -> ! {
    panic!("Redis unavailable during a replay: {e}")
}

fn apply_redis(
    rt: &tokio::runtime::Runtime,
    store: &dyn ErasedRedisStore,
    clock: &ManualClock,
    tokens: &mut TokenOrder,
    op: &Op,
) -> Output {
    let settled = |r: Result<(), SettleError>| match r {
        Err(SettleError::Unavailable(e)) => unavailable_in_replay(e),
        Err(SettleError::Lease(e)) => Output::Done(Err(e)),
        Ok(()) => Output::Done(Ok(())),
    };
    match op {
        Op::Begin { id: i, fingerprint } => {
            let (s, k) = id(*i);
            match rt.block_on(store.begin(&s, &k, Fingerprint(u64::from(*fingerprint)))) {
                Ok(Begin::Execute(lease)) => {
                    Output::Began(Begin::Execute(Lease { token: tokens.rank(*i, lease.token) }))
                }
                Ok(other) => Output::Began(other),
                Err(e) => unavailable_in_replay(e),
            }
        }
        Op::Complete { id: i, token, response: r } => {
            let (s, k) = id(*i);
            settled(rt.block_on(store.complete(&s, &k, tokens.real(*token), response(*r))))
        }
        Op::Abandon { id: i, token } => {
            let (s, k) = id(*i);
            settled(rt.block_on(store.abandon(&s, &k, tokens.real(*token))))
        }
        Op::Advance(d) => {
            clock.advance(*d);
            Output::Nothing
        }
    }
}

fn redis_sequences(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = &runtime()?;
    let replay_redis = |config: &IdempotencyConfig, ops: &[Op]| {
        let (config, ops) = redis_scenario(config, ops);
        replay::<IdempotencySpec, _>(&config, &ops, |config| {
            let clock = ManualClock::new();
            let store = rt
                .block_on(make(RedisTarget::Server(server.url().to_string()), redis_config(*config), clock.shared()))
                .unwrap_or_else(|e| panic!("connect: {e}"));
            let mut tokens = TokenOrder::default();
            move |op: &Op| apply_redis(rt, store.as_ref(), &clock, &mut tokens, op)
        })
    };
    for (config, ops) in edge_scenarios() {
        if tokens_stay_with_their_records(&config, &ops) {
            replay_redis(&config, &ops)?;
        }
    }
    random(random_ops(), Budget { cases: 64, ..Budget::default() }, |(config, ops)| {
        if !tokens_stay_with_their_records(config, ops) {
            return Ok(());
        }
        replay_redis(config, ops)
    })
}

/// Every key in `namespace` with its `PTTL` in ms (-1: no expiry).
fn namespace_ttls(rt: &tokio::runtime::Runtime, url: &str, namespace: &str) -> Result<Vec<(String, i64)>, CaseError> {
    let inspected: Result<Vec<(String, i64)>, redis::RedisError> = rt.block_on(async {
        let mut raw = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
        crate::redis_server::namespace_ttls(&mut raw, namespace).await
    });
    inspected.map_err(|e| CaseError::failed(format!("inspecting Redis: {e}")))
}

/// Replays one key's `ops` on Redis and, after every call, holds each key's `PTTL` to
/// what the contract needs: no key without expiry, and after a call
/// that (re)starts the record's life, a TTL no shorter than its remaining life and no
/// longer than [`REDIS_EXPIRY_GRACE`] plus twice it. With `real_sleeps`, each clock
/// step is also slept for real, so Redis's own expiry acts as it would in production.
fn lifetimes_replay(
    rt: &tokio::runtime::Runtime,
    url: &str,
    make: RedisFactory,
    config: &IdempotencyConfig,
    ops: &[Op],
    real_sleeps: bool,
) -> CaseResult {
    let (config, ops) = redis_scenario(config, ops);
    trying(&(config, &ops));
    let clock = ManualClock::new();
    let redis_config = redis_config(config);
    let namespace = redis_config.namespace.clone();
    let store = connect(rt, make, url, redis_config, &clock)?;
    let mut model = IdempotencySpec::model(&config);
    let mut tokens = TokenOrder::default();
    let mut transcript = format!("{config:?}\n");
    // The record's remaining life as of the last call that set it, and real time since.
    let mut written: Option<(Duration, Stopwatch)> = None;
    for (index, op) in ops.iter().enumerate() {
        let end_before = model.records.values().next().map(|(_, s)| s.end(config.retention()));
        let expected = IdempotencySpec::step(&mut model, op);
        let call = Stopwatch::start();
        if let (Op::Advance(d), true) = (op, real_sleeps) {
            thread::sleep(*d);
        }
        let actual = guarded(|| apply_redis(rt, store.as_ref(), &clock, &mut tokens, op))
            .map_err(|p| p.into_case_error(format!("{transcript}{:>4}. {op:?}", index + 1)))?;
        let _ = writeln!(transcript, "{:>4}. {op:?} -> {actual:?}", index + 1);
        if actual != expected {
            let _ = writeln!(transcript, "      expected {expected:?}   <-- first difference");
            let report = format!("counterexample ({} steps):\n{transcript}", index + 1);
            let hint = if real_sleeps {
                Some(
                    "Redis dropped a record the contract still holds: every key of a record must live at least until \
                     the record is reaped (leased_until + retention while in progress, completed_at + retention once \
                     completed).",
                )
            } else {
                IdempotencySpec::hint(op, &expected, &actual)
            };
            return Err(CaseError::failed(match hint {
                Some(hint) => with_hint(report, hint),
                None => report,
            }));
        }
        let end = model.records.values().next().map(|(_, s)| s.end(config.retention()));
        let restarted = end.is_some() && end != end_before && !matches!(op, Op::Advance(_));
        if restarted {
            let need = end.unwrap_or(Timestamp::MAX).saturating_duration_since(model.now);
            written = Some((need, call));
        } else if end.is_none() {
            written = None;
        }
        let ttls = namespace_ttls(rt, url, &namespace)?;
        let without_expiry: Vec<&String> = ttls.iter().filter(|(_, ttl)| *ttl < 0).map(|(k, _)| k).collect();
        let fail = |why: String| {
            let report = format!("{transcript}      keys in Redis now (PTTL in ms, -1: no expiry): {ttls:?}\n{why}");
            Err(CaseError::failed(with_hint(
                report,
                "Every key of a record expires, no earlier than the record is reaped (leased_until + retention while in \
                 progress, completed_at + retention once completed) and not much later.",
            )))
        };
        if !without_expiry.is_empty() {
            return fail(format!(
                "keys without expiry: {without_expiry:?}; every key needs a TTL (a record's, an in-progress one's too, \
                 and its fence's)"
            ));
        }
        let Some((need, since)) = written else { continue };
        let need_ms = need.as_millis();
        let elapsed_ms = since.elapsed().as_millis();
        // Every key of the record must last (its fence too), so the shortest decides.
        let shortest = ttls.iter().map(|(_, ttl)| *ttl).min().unwrap_or(-1);
        if shortest < 0 || (shortest as u128) + elapsed_ms + 1 < need_ms {
            return fail(format!(
                "the record must survive in Redis for {need:?} more (until it is reaped: leased_until + retention while \
                 in progress, completed_at + retention once completed), but {}: Redis would drop the record early and \
                 a retry would execute again",
                if shortest < 0 {
                    "no key with a TTL is left (the record's key has already expired)".to_string()
                } else {
                    format!("a key of the record has {shortest} ms left")
                }
            ));
        }
        let grace = REDIS_EXPIRY_GRACE.as_millis() + 2 * need_ms + 1;
        let fitting = |ttl: i64| ttl >= 0 && (ttl as u128) + elapsed_ms + 1 >= need_ms && ttl as u128 <= grace;
        if restarted
            && !(ttls.iter().all(|(_, ttl)| *ttl as u128 <= grace) && ttls.iter().any(|(_, ttl)| fitting(*ttl)))
        {
            return fail(format!(
                "the record needs {need:?} more, and no key's TTL lies between that and REDIS_EXPIRY_GRACE \
                 ({REDIS_EXPIRY_GRACE:?}) + twice the record's life ({grace} ms): the record's key lives far too long. \
                 A TTL in the wrong unit?"
            ));
        }
    }
    Ok(())
}

/// Key lifetimes after every call, at time scales from milliseconds to years.
fn key_lifetimes(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    let ms = Duration::from_millis;
    let scales =
        [(ms(30), ms(80)), (ms(2_500), ms(700)), (Duration::from_secs(3600), Duration::from_secs(86_400 * 400))];
    let mut rng = SplitMix::new(0x7711);
    for (lease, retention) in scales {
        let config = IdempotencyConfig::new(lease, retention).expect("nonzero");
        for _ in 0..12 {
            let step = lease.max(retention) / 3;
            let ops: Vec<Op> = (0..10)
                .map(|i| match rng.below(7) {
                    0..=2 => Op::Begin { id: 7, fingerprint: 1 + (rng.below(4) == 0) as u8 },
                    3 | 4 => Op::Complete { id: 7, token: 1 + rng.below(3) as u64, response: i },
                    5 => Op::Abandon { id: 7, token: 1 + rng.below(3) as u64 },
                    _ => Op::Advance(step),
                })
                .collect();
            lifetimes_replay(&rt, server.url(), make, &config, &ops, false)?;
        }
    }
    Ok(())
}

/// Real time passes (tens of ms) while the test clock follows: a record whose key
/// expires with the lease, or too soon after completing, is lost while the contract
/// still holds it.
fn expiry_in_real_time(make: RedisFactory) -> CaseResult {
    use Op::*;
    let server = RedisServer::start()?;
    let rt = runtime()?;
    let config = IdempotencyConfig::new(Duration::from_millis(50), Duration::from_millis(400)).expect("nonzero");
    let pause = Advance(Duration::from_millis(80));
    let scenarios = [
        // Completed, then a retry once a lease's worth of real time has passed: Replay.
        vec![
            Begin { id: 7, fingerprint: 1 },
            Complete { id: 7, token: 1, response: 2 },
            pause.clone(),
            Begin { id: 7, fingerprint: 1 },
        ],
        // The executor completes after its lease ran out (nobody took over): it lands.
        vec![
            Begin { id: 2, fingerprint: 1 },
            pause.clone(),
            Complete { id: 2, token: 1, response: 3 },
            Begin { id: 2, fingerprint: 1 },
        ],
        // After the lease, within retention, the record still answers Mismatch.
        vec![
            Begin { id: 4, fingerprint: 1 },
            pause.clone(),
            Begin { id: 4, fingerprint: 2 },
            pause,
            Begin { id: 4, fingerprint: 1 },
        ],
    ];
    for ops in &scenarios {
        lifetimes_replay(&rt, server.url(), make, &config, ops, true)?;
    }
    Ok(())
}

/// Several instances, one Redis: exactly one executes, and after a takeover only the
/// new executor's complete lands.
fn one_executor_across_instances(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    let clock = ManualClock::new();
    let config = redis_config(config(10, 600));
    let instances: Vec<Arc<dyn ErasedRedisStore>> =
        (0..4).map(|_| connect(&rt, make, server.url(), config.clone(), &clock)).collect::<Result<_, _>>()?;
    for round in 0..20 {
        let key = format!("order-{round}");
        let answers: Vec<Result<Begin, StoreUnavailable>> = rt.block_on(async {
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let (store, key) = (Arc::clone(&instances[i % 4]), key.clone());
                    tokio::spawn(async move { store.begin("shop", &key, Fingerprint(7)).await })
                })
                .collect();
            let mut answers = Vec::new();
            for task in tasks {
                answers.push(task.await.unwrap_or_else(|e| Err(StoreUnavailable(format!("task failed: {e}")))));
            }
            answers
        });
        let executed = answers.iter().filter(|a| matches!(a, Ok(Begin::Execute(_)))).count();
        if executed != 1 || answers.iter().any(|a| a.is_err()) {
            return Err(CaseError::failed(format!(
                "8 identical requests through 4 instances: {executed} executed (expected 1); answers {answers:?}"
            )));
        }
    }
    // Takeover: A's lease expires, B takes over, both try to complete at once.
    let (a, b) = (&instances[0], &instances[1]);
    let first = rt.block_on(a.begin("shop", "refund", Fingerprint(1)));
    let Ok(Begin::Execute(old)) = first else {
        return Err(CaseError::failed(format!("begin on a new key returned {first:?}")));
    };
    clock.advance(Duration::from_secs(11));
    let second = rt.block_on(b.begin("shop", "refund", Fingerprint(1)));
    let Ok(Begin::Execute(new)) = second else {
        return Err(CaseError::failed(format!(
            "after the lease expired, a retry got {second:?}, expected Execute with a newer token"
        )));
    };
    let (late, current) = rt.block_on(async {
        let old_response = Response { status: 200, body: b"old".to_vec() };
        let new_response = Response { status: 200, body: b"new".to_vec() };
        tokio::join!(
            a.complete("shop", "refund", old.token, old_response),
            b.complete("shop", "refund", new.token, new_response)
        )
    });
    let replay = rt.block_on(a.begin("shop", "refund", Fingerprint(1)));
    let expected = Ok(Begin::Replay(Response { status: 200, body: b"new".to_vec() }));
    // Whichever lands first, the old token is refused as StaleToken (SETTLE_CHECK_ORDER:
    // the fence comes before "already completed").
    let refused = matches!(late, Err(SettleError::Lease(LeaseError::StaleToken)));
    if new.token <= old.token || !refused || current != Ok(()) || replay != expected {
        return Err(CaseError::failed(format!(
            "takeover: old token {}, new token {} (must be greater); old executor's complete {late:?} (expected StaleToken, even if the new one completed first), \
             new executor's {current:?} (expected Ok), then a retry got {replay:?} (expected the new response)",
            old.token, new.token
        )));
    }
    Ok(())
}

/// Kill Redis mid-use: calls fail fast with Unavailable, work again after a restart,
/// and a token from before the (data-losing) outage never completes a newer record.
fn outage(make: RedisFactory) -> CaseResult {
    let mut server = RedisServer::start()?;
    if !server.owned() {
        return Err(CaseError::Skipped("REDIS_URL points at an external server, which this case cannot kill".into()));
    }
    let rt = runtime()?;
    let clock = ManualClock::starting_at(Timestamp::from_nanos(1_000_000_000_000));
    let config = RedisStoreConfig { timeout: OUTAGE_CALL_TIMEOUT, ..redis_config(config(30, 600)) };
    let store = connect(&rt, make, server.url(), config, &clock)?;
    let bounded = |call: BoxFuture<'_, Result<Begin, StoreUnavailable>>| {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), call).await })
    };
    let Ok(Ok(Begin::Execute(old))) = bounded(store.begin("pay", "p-1", Fingerprint(1))) else {
        return Err(CaseError::failed("before the outage, begin on a new key did not Execute"));
    };
    server.kill();
    match bounded(store.begin("pay", "p-2", Fingerprint(1))) {
        Ok(Err(StoreUnavailable(_))) => {}
        Err(_) => {
            return Err(CaseError::failed(
                "with Redis down, begin had not returned after 5s (timeout configured: 500ms)",
            ))
        }
        Ok(other) => {
            return Err(CaseError::failed(format!(
                "with Redis down, begin returned {other:?}, expected Err(StoreUnavailable)"
            )))
        }
    }
    // The outage takes time; the restarted Redis has lost every record and counter.
    clock.advance(Duration::from_secs(1));
    server.restart()?;
    let again = within_reconnect_window(|| bounded(store.begin("pay", "p-1", Fingerprint(1))).ok()?.ok());
    let Some(Begin::Execute(new)) = again else {
        return Err(CaseError::failed(format!(
            "after Redis restarted (data lost), a retry of p-1 got {again:?}, expected Execute"
        )));
    };
    let late = rt.block_on(store.complete("pay", "p-1", old.token, Response { status: 200, body: b"old".to_vec() }));
    if new.token <= old.token || late.is_ok() {
        return Err(CaseError::failed(format!(
            "token {} from before the outage vs {} after it: tokens must keep increasing across data loss, \
             and the old executor's complete must be refused (got {late:?})",
            old.token, new.token
        )));
    }
    Ok(())
}

/// One round trip per call; keys hash-tagged alike; records expire.
fn round_trips_and_keys(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let counter = CommandCounter::start(server.url())?;
    let rt = runtime()?;
    let clock = ManualClock::new();
    let config = redis_config(config(30, 600));
    let namespace = config.namespace.clone();
    let store = connect(&rt, make, &counter.url, config, &clock)?;
    // Warm up (scripts may load on first use), then count.
    if let Ok(Begin::Execute(lease)) = rt.block_on(store.begin("s", "warm", Fingerprint(1))) {
        let _ = rt.block_on(store.complete("s", "warm", lease.token, Response { status: 200, body: Vec::new() }));
    }
    let before = counter.commands();
    for i in 0..20 {
        let key = format!("k{i}");
        match rt.block_on(store.begin("s", &key, Fingerprint(1))) {
            Ok(Begin::Execute(lease)) => {
                rt.block_on(store.complete("s", &key, lease.token, Response { status: 200, body: b"x".to_vec() }))
                    .map_err(|e| CaseError::failed(format!("complete returned {e:?}")))?;
            }
            other => return Err(CaseError::failed(format!("begin on a new key returned {other:?}"))),
        }
    }
    let commands = counter.commands() - before;
    if commands != 40 {
        return Err(CaseError::failed(format!(
            "20 begin + 20 complete sent {commands} commands to Redis: expected one round trip per call (40)"
        )));
    }
    // 21 records (and whatever fences they keep), each tagged by record, all expiring.
    let prefix = format!("{namespace}:");
    let expected = format!("{{{namespace}:<scope and key>}} (e.g. {})", record_tag(&namespace, "s", "k0"));
    check_tagged_keys(&rt, server.url(), &namespace, 21, 0, &expected, &|tag| {
        tag.is_some_and(|t| t.starts_with(&prefix))
    })?;
    let tags: std::collections::BTreeSet<String> = namespace_ttls(&rt, server.url(), &namespace)?
        .into_iter()
        .filter_map(|(k, _)| crate::redis_server::hash_tag(&k).map(str::to_string))
        .collect();
    if tags.len() < 21 {
        return Err(CaseError::failed(format!(
            "21 records used {} hash tags ({tags:?}): tag each record's keys by its scope and key, so records spread \
             over a cluster",
            tags.len()
        )));
    }
    Ok(())
}

/// The Redis-backed cases (level 5 on one server, level 6 on a cluster), for the
/// distributed implementation `make` builds.
pub fn redis_suite(make: RedisFactory) -> Vec<Case> {
    let case = |name, hints: Hints, run: fn(RedisFactory) -> CaseResult| {
        Case::new(EXERCISE, L5, name, hints, THREADED, move || run(make)).with_redis()
    };
    let mut cases = vec![
        case("sequences", Hints::new(
            "The in-memory contract, replayed on Redis (whole microseconds, bodies of any bytes). Tokens only have to \
             increase, not to count from 1.",
            "Atomicity moves to the server: instances share the records, so each call's read, decision and write, the \
             token included, must be one atomic step inside Redis. Lua numbers are doubles: time travels in whole \
             microseconds.",
            "One Lua script per call (redis::Script): the record in a hash (fingerprint, state, token, deadline, status, \
             body as a binary-safe string), the record's last token in a fence key beside it, now in µs from ARGV."),
            redis_sequences),
        case("one_executor_across_instances", Hints::new(
            "8 identical requests through 4 instances on one Redis: exactly one executes. After a takeover, the old token's \
             complete is refused with StaleToken even if the new executor completed first, and retries replay the new \
             response.",
            "A lock inside one process means nothing to another: the exists-check and the create, and the token check and \
             the write, must each be one atomic step in the shared store.",
            "Do each of begin, complete and abandon in a single script that checks and writes together; never GET, decide \
             in the client, then SET."),
            one_executor_across_instances),
        case("outage", Hints::new(
            "Redis is killed mid-use and restarts with its data lost: while it is down, calls return Unavailable within \
             the timeout; afterwards they work again, and a token from before the loss never completes a record made \
             after it.",
            "Fencing tokens must keep increasing across failures: a counter that starts again from 1 after data loss hands \
             a new executor a token an old executor still holds, and the fence lets the old one through.",
            "Bound every call with tokio::time::timeout and use a reconnecting client (redis::aio::ConnectionManager); in \
             the script, take token = max(fence + 1, now in µs): a lost fence restarts from the clock, above every old \
             token."),
            outage),
        case("round_trips_and_keys", Hints::new(
            "One round trip per call; every key of a record carries one hash tag naming the namespace, the scope and the \
             key ({namespace:...}), so 21 records use 21 tags; every key expires.",
            "Redis Cluster runs a multi-key script only when all its keys share a hash slot: tagging by record keeps a \
             record's keys together while records spread over the masters. Every extra round trip adds a network latency \
             to every request.",
            "redis::Script sends EVALSHA (and the script itself once, on NOSCRIPT); keys <record_tag(namespace, scope, \
             key)>:r and <record_tag>:f (its fence); PEXPIRE inside the script."),
            round_trips_and_keys),
        case("key_lifetimes", Hints::new(
            "After every call, every key's PTTL: a record's key expires no earlier than the record is reaped \
             (leased_until + retention in progress, completed_at + retention once completed) and at most \
             REDIS_EXPIRY_GRACE plus the record's life again later; no key lives forever.",
            "A key's life mirrors its record's, not its lease: a key gone with the lease loses a record whose fingerprint \
             and late complete still count; one that lives far longer is a leak (a TTL in the wrong unit?).",
            "PEXPIRE the record key on every write: lease + retention at begin, retention at complete, in milliseconds \
             rounded up from the µs times."),
            key_lifetimes),
        case("expiry_in_real_time", Hints::new(
            "Real time passes while the test clock follows: a record survives in Redis past its lease, so a late complete \
             lands, another fingerprint is still Mismatch and a retry replays.",
            "Redis expires keys on its own clock, in real time: the key must outlive the record's whole contract lifetime, \
             whatever the callers' clocks say.",
            "As in key_lifetimes: a TTL of the record's whole remaining life (lease + retention while in progress), never \
             just the lease."),
            expiry_in_real_time),
    ];
    cases.extend(super::cluster::cluster_suite(make));
    cases
}
