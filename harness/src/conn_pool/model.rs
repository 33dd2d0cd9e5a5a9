//! The model of the connection pool: a deterministic, sequential pool in virtual
//! milliseconds that says what every scripted op must produce. It follows the rules on
//! [`ConnPool`](super::ConnPool) step by step; the suites replay the same ops on the
//! attempt (through the fake connector on a paused Tokio runtime) and compare.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use super::contract::{ConnectError, PoolConfig, PoolError, PoolStats};
use crate::sequential::Spec;

/// What the fake connector's `connect()` does, from this op on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Connects {
    /// Opens a connection (after a few yields).
    Up,
    /// Fails at once with [`refused`] (the server is down).
    Down,
    /// Never finishes (a black-holed server): only the checkout timeout ends it.
    Hang,
}

/// The error the fake connector fails with.
pub fn refused() -> ConnectError {
    ConnectError("connection refused".to_string())
}

/// One step of a script. Gets are numbered from 0 in the order they are made; guards
/// are "held" from the moment their `get()` returned, oldest first.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A new `get()` call (its own task).
    Get,
    /// The oldest held guard is dropped.
    DropOldest,
    /// The newest held guard is dropped.
    DropNewest,
    /// The newest holder panics: its guard is dropped while unwinding.
    PanicNewest,
    /// The newest held connection breaks: `is_valid` says `false` from now on.
    BreakNewest,
    /// Every open connection breaks (the server restarted).
    BreakAll,
    /// The connector's behaviour from now on.
    Connects(Connects),
    /// The oldest pending `get()` (waiting, or connecting) is cancelled: its future dropped.
    CancelOldest,
    /// The oldest guard is dropped and, in the same instant (before the waiter it is
    /// handed to runs again), the oldest waiting `get()` is cancelled.
    ReturnToCancelled,
    /// Virtual time passes (milliseconds).
    Advance(u64),
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get => write!(f, "get()"),
            Op::DropOldest => write!(f, "drop(oldest guard)"),
            Op::DropNewest => write!(f, "drop(newest guard)"),
            Op::PanicNewest => write!(f, "newest holder panics"),
            Op::BreakNewest => write!(f, "newest held connection breaks"),
            Op::BreakAll => write!(f, "every open connection breaks"),
            Op::Connects(c) => write!(f, "connector {c:?} from now on"),
            Op::CancelOldest => write!(f, "cancel(oldest pending get)"),
            Op::ReturnToCancelled => write!(f, "drop(oldest guard) + cancel(oldest waiting get) at once"),
            Op::Advance(ms) => write!(f, "advance({ms}ms)"),
        }
    }
}

/// What one op produced: the `get()` calls that returned during it (by number, in
/// number order; a connection is named by the order in which connections were first
/// handed out: c0, c1, ...), then the pool's stats and how many connections the
/// connector has open.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Output {
    pub returned: Vec<(usize, Result<u32, PoolError>)>,
    pub stats: PoolStats,
    pub open: usize,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (get, result) in &self.returned {
            match result {
                Ok(c) => write!(f, "get#{get} = c{c}; ")?,
                Err(e) => write!(f, "get#{get} = Err({e:?}); ")?,
            }
        }
        let s = self.stats;
        write!(
            f,
            "in_use {} idle {} waiting {} total_waits {}, open {}",
            s.in_use, s.idle, s.waiting, s.total_waits, self.open
        )
    }
}

/// A scripted pool: its config (durations in whole ms) and connector settings.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Config {
    pub pool: PoolConfig,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| if d == Duration::MAX { "never".to_string() } else { format!("{}ms", d.as_millis()) };
        let p = self.pool;
        write!(
            f,
            "Pool::new(max_size {}, min_idle {}, checkout_timeout {}, max_lifetime {}, idle_timeout {})",
            p.max_size,
            p.min_idle,
            ms(p.checkout_timeout),
            ms(p.max_lifetime),
            ms(p.idle_timeout)
        )
    }
}

/// A config in whole milliseconds (`None`: never).
pub fn config(max_size: usize, min_idle: usize, timeout: u64, lifetime: Option<u64>, idle: Option<u64>) -> Config {
    let ms = |v: Option<u64>| v.map_or(Duration::MAX, Duration::from_millis);
    Config {
        pool: PoolConfig {
            max_size,
            min_idle,
            checkout_timeout: Duration::from_millis(timeout),
            max_lifetime: ms(lifetime),
            idle_timeout: ms(idle),
        },
    }
}

/// An open connection as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Conn {
    /// Its name once first handed out.
    label: Option<u32>,
    opened: u64,
    idle_since: u64,
    broken: bool,
}

/// Who a connect in flight (hanging) is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Opener {
    Get(usize),
    TopUp,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Model {
    config: PoolConfig,
    now: u64,
    connects: Connects,
    /// Bottom to top: `pop` takes the most recently returned (LIFO).
    idle: Vec<Conn>,
    /// Guards held, oldest first: (get number, connection).
    held: Vec<(usize, Conn)>,
    /// Waiting gets, first come first: (get number, deadline).
    waiters: VecDeque<(usize, u64)>,
    /// Connects that hang, each until its deadline.
    hanging: Vec<(Opener, u64)>,
    next_get: usize,
    next_label: u32,
    total_waits: u64,
    returned: Vec<(usize, Result<u32, PoolError>)>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Model {
    fn slots(&self) -> usize {
        self.idle.len() + self.held.len() + self.hanging.len()
    }

    fn deadline(&self) -> u64 {
        self.now.saturating_add(ms(self.config.checkout_timeout))
    }

    fn too_old(&self, c: &Conn) -> bool {
        self.now >= c.opened.saturating_add(ms(self.config.max_lifetime))
    }

    fn expired_idle(&self, c: &Conn) -> bool {
        self.too_old(c) || self.now >= c.idle_since.saturating_add(ms(self.config.idle_timeout))
    }

    /// Step 1 of `get()` and of a return: close expired idle connections.
    fn sweep(&mut self) {
        let idle = std::mem::take(&mut self.idle);
        self.idle = idle.into_iter().filter(|c| !self.expired_idle(c)).collect();
    }

    fn fresh(&self) -> Conn {
        Conn { label: None, opened: self.now, idle_since: self.now, broken: false }
    }

    fn hand_out(&mut self, get: usize, mut conn: Conn) {
        let label = *conn.label.get_or_insert_with(|| {
            self.next_label += 1;
            self.next_label - 1
        });
        self.held.push((get, conn));
        self.returned.push((get, Ok(label)));
    }

    /// Step 2: the most recently returned valid idle connection, closing broken ones.
    fn take_idle(&mut self, get: usize) -> bool {
        while let Some(conn) = self.idle.pop() {
            if !conn.broken {
                self.hand_out(get, conn);
                return true;
            }
        }
        false
    }

    /// Step 3: `get` has a slot and connects. Returns whether it succeeded.
    fn connect_for(&mut self, get: usize, deadline: u64) -> bool {
        match self.connects {
            Connects::Up => {
                let conn = self.fresh();
                self.hand_out(get, conn);
                true
            }
            Connects::Down => {
                self.returned.push((get, Err(PoolError::Connect(refused()))));
                false
            }
            Connects::Hang => {
                self.hanging.push((Opener::Get(get), deadline));
                false
            }
        }
    }

    /// Free slots go to the waiters, first come first, who connect.
    /// A waiter served this way has had a successful `get()`: top-up follows.
    fn serve_free_slots(&mut self) {
        let mut served = false;
        while self.slots() < self.config.max_size {
            let Some((get, deadline)) = self.waiters.pop_front() else { break };
            served |= self.connect_for(get, deadline);
        }
        if served {
            self.top_up();
        }
    }

    fn top_up(&mut self) {
        loop {
            let topping = self.hanging.iter().filter(|(o, _)| *o == Opener::TopUp).count();
            if self.idle.len() + topping >= self.config.min_idle || self.slots() >= self.config.max_size {
                return;
            }
            match self.connects {
                Connects::Up => {
                    let conn = self.fresh();
                    self.idle.push(conn);
                }
                Connects::Down => return,
                Connects::Hang => {
                    let deadline = self.deadline();
                    self.hanging.push((Opener::TopUp, deadline));
                }
            }
        }
    }

    fn get(&mut self) {
        let get = self.next_get;
        self.next_get += 1;
        self.sweep();
        let served = if self.take_idle(get) {
            true
        } else if self.slots() < self.config.max_size {
            let deadline = self.deadline();
            self.connect_for(get, deadline)
        } else {
            let deadline = self.deadline();
            self.waiters.push_back((get, deadline));
            self.total_waits += 1;
            false
        };
        if served {
            self.top_up();
        }
    }

    /// A return of `conn` (a guard dropped) at `now`.
    fn give_back(&mut self, mut conn: Conn) {
        self.sweep();
        if self.too_old(&conn) {
            self.serve_free_slots();
        } else if let Some((get, deadline)) = self.waiters.pop_front() {
            if conn.broken {
                // Validated by the waiter, found broken, closed: its slot is the waiter's
                // (and if its connect fails, the next waiter's).
                if !self.connect_for(get, deadline) {
                    self.serve_free_slots();
                }
            } else {
                self.hand_out(get, conn);
            }
        } else {
            conn.idle_since = self.now;
            self.idle.push(conn);
        }
        self.top_up();
    }

    fn cancel_oldest(&mut self) {
        let waiting = self.waiters.front().map(|&(g, _)| g);
        let connecting =
            self.hanging.iter().filter_map(|&(o, _)| if let Opener::Get(g) = o { Some(g) } else { None }).min();
        match (waiting, connecting) {
            (Some(w), Some(c)) if c < w => self.abandon(c),
            (Some(_), _) => {
                self.waiters.pop_front();
            }
            (None, Some(c)) => self.abandon(c),
            (None, None) => {}
        }
    }

    /// The connect of get `get` is dropped: its slot goes to the waiters.
    fn abandon(&mut self, get: usize) {
        self.hanging.retain(|&(o, _)| o != Opener::Get(get));
        self.serve_free_slots();
    }

    fn advance(&mut self, by: u64) {
        let target = self.now.saturating_add(by);
        loop {
            let next = self.waiters.iter().map(|&(_, d)| d).chain(self.hanging.iter().map(|&(_, d)| d)).min();
            let Some(at) = next.filter(|&d| d <= target) else { break };
            self.now = at;
            // Every deadline reached fails first; only then do freed slots go to waiters.
            let waiters = std::mem::take(&mut self.waiters);
            for (get, deadline) in waiters {
                if deadline <= at {
                    self.returned.push((get, Err(PoolError::Timeout)));
                } else {
                    self.waiters.push_back((get, deadline));
                }
            }
            let hanging = std::mem::take(&mut self.hanging);
            for (opener, deadline) in hanging {
                if deadline > at {
                    self.hanging.push((opener, deadline));
                } else if let Opener::Get(get) = opener {
                    self.returned.push((get, Err(PoolError::Timeout)));
                }
            }
            self.serve_free_slots();
        }
        self.now = target;
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            in_use: self.held.len(),
            idle: self.idle.len(),
            waiting: self.waiters.len(),
            total_waits: self.total_waits,
        }
    }
}

/// The pool's specification for [`crate::sequential`].
pub struct PoolSpec;

impl Spec for PoolSpec {
    type Config = Config;
    type Op = Op;
    type Output = Output;
    type Model = Model;

    fn model(config: &Config) -> Model {
        let mut model = Model {
            config: config.pool,
            now: 0,
            connects: Connects::Up,
            idle: Vec::new(),
            held: Vec::new(),
            waiters: VecDeque::new(),
            hanging: Vec::new(),
            next_get: 0,
            next_label: 0,
            total_waits: 0,
            returned: Vec::new(),
        };
        // `new` starts the top-up to min_idle.
        model.top_up();
        model
    }

    fn step(model: &mut Model, op: &Op) -> Output {
        match op {
            Op::Get => model.get(),
            Op::DropOldest | Op::DropNewest | Op::PanicNewest => {
                if !model.held.is_empty() {
                    let index = if matches!(op, Op::DropOldest) { 0 } else { model.held.len() - 1 };
                    let (_, conn) = model.held.remove(index);
                    model.give_back(conn);
                }
            }
            Op::BreakNewest => {
                if let Some((_, conn)) = model.held.last_mut() {
                    conn.broken = true;
                }
            }
            Op::BreakAll => {
                for conn in model.idle.iter_mut().chain(model.held.iter_mut().map(|(_, c)| c)) {
                    conn.broken = true;
                }
            }
            Op::Connects(c) => model.connects = *c,
            Op::CancelOldest => model.cancel_oldest(),
            Op::ReturnToCancelled => {
                if !model.waiters.is_empty() {
                    model.waiters.pop_front();
                }
                if !model.held.is_empty() {
                    let (_, conn) = model.held.remove(0);
                    model.give_back(conn);
                }
            }
            Op::Advance(by) => model.advance(*by),
        }
        let mut returned = std::mem::take(&mut model.returned);
        returned.sort_by_key(|&(get, _)| get);
        Output { returned, stats: model.stats(), open: model.idle.len() + model.held.len() }
    }

    fn hint(op: &Op, expected: &Output, actual: &Output) -> Option<&'static str> {
        let e = expected.stats;
        let a = actual.stats;
        let timeouts = |o: &Output| o.returned.iter().filter(|(_, r)| matches!(r, Err(PoolError::Timeout))).count();
        if timeouts(expected) > timeouts(actual) {
            return Some("a get() must fail with PoolError::Timeout once checkout_timeout has passed since it started, whatever it was waiting for");
        }
        if actual.open > expected.open {
            return Some("an expired or broken connection must be closed (dropped), and the pool must never open more than it needs");
        }
        if expected.returned.len() != actual.returned.len() {
            return Some("a returned connection goes to the longest-waiting get(); a freed slot lets the longest-waiting get() connect");
        }
        if expected.returned != actual.returned {
            return Some("which connection: idle ones are taken most-recently-returned first, validated, expired ones closed; waiters are served first come, first served");
        }
        if e.idle != a.idle && matches!(op, Op::Get | Op::DropOldest | Op::DropNewest | Op::PanicNewest) {
            return Some("after a checkout or a return, min_idle idle connections are topped up in the background, and expired idle ones are closed");
        }
        if e != a {
            return Some("the stats: in_use = guards alive, idle = open connections in the pool, waiting = gets queued now, total_waits = gets that ever queued");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: Config, ops: &[Op]) -> Vec<Output> {
        let mut model = PoolSpec::model(&config);
        ops.iter().map(|op| PoolSpec::step(&mut model, op)).collect()
    }

    /// The worked example of `exercises/statements/conn_pool.md`, step by step: the
    /// statement and the model agree.
    #[test]
    fn model_agrees_with_the_statements_worked_example() {
        use Op::*;
        let ops = [
            Get,
            Get,
            Get,
            Advance(10),
            DropOldest,
            Get,
            Advance(30),
            DropOldest,
            BreakNewest,
            DropNewest,
            Get,
            DropOldest,
            Advance(50),
            Get,
        ];
        let shown: Vec<String> = run(config(2, 0, 30, None, Some(50)), &ops).iter().map(|o| format!("{o:?}")).collect();
        let expected = [
            "get#0 = c0; in_use 1 idle 0 waiting 0 total_waits 0, open 1",
            "get#1 = c1; in_use 2 idle 0 waiting 0 total_waits 0, open 2",
            "in_use 2 idle 0 waiting 1 total_waits 1, open 2",
            "in_use 2 idle 0 waiting 1 total_waits 1, open 2",
            "get#2 = c0; in_use 2 idle 0 waiting 0 total_waits 1, open 2",
            "in_use 2 idle 0 waiting 1 total_waits 2, open 2",
            "get#3 = Err(Timeout); in_use 2 idle 0 waiting 0 total_waits 2, open 2",
            "in_use 1 idle 1 waiting 0 total_waits 2, open 2",
            "in_use 1 idle 1 waiting 0 total_waits 2, open 2",
            "in_use 0 idle 2 waiting 0 total_waits 2, open 2",
            "get#4 = c1; in_use 1 idle 0 waiting 0 total_waits 2, open 1",
            "in_use 0 idle 1 waiting 0 total_waits 2, open 1",
            "in_use 0 idle 1 waiting 0 total_waits 2, open 1",
            "get#5 = c2; in_use 1 idle 0 waiting 0 total_waits 2, open 1",
        ];
        assert_eq!(shown, expected);
    }
}
