//! Exercise: the top K most active users over a sliding window of a log stream of
//! `timestamp user_id action` lines. Holds the contract ([`SlidingTopK`]), the line
//! grammar and its errors, the model and the graded suite. Semantics:
//! `shared/spec/others.md`, restated on the trait.

use std::collections::BTreeMap;
use std::fmt;

use proptest::prelude::*;

use crate::sequential::{exhaustive, random, replay, Budget, Spec};
use crate::suite::{guarded, Case, CaseError, CaseResult, Level, QUICK_DEADLINE as QUICK};

/// How a top-K tracker is set up: count events in the last `window` timestamp units
/// and report the `k` most active users.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopKConfig {
    window: u64,
    k: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopKConfigError {
    ZeroWindow,
    ZeroK,
}

impl fmt::Display for TopKConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopKConfigError::ZeroWindow => write!(f, "the window must be at least 1 timestamp unit"),
            TopKConfigError::ZeroK => write!(f, "k must be at least 1"),
        }
    }
}

impl std::error::Error for TopKConfigError {}

impl TopKConfig {
    pub fn new(window: u64, k: usize) -> Result<Self, TopKConfigError> {
        match (window, k) {
            (0, _) => Err(TopKConfigError::ZeroWindow),
            (_, 0) => Err(TopKConfigError::ZeroK),
            _ => Ok(TopKConfig { window, k }),
        }
    }
    pub fn window(&self) -> u64 {
        self.window
    }
    pub fn k(&self) -> usize {
        self.k
    }
}

impl fmt::Debug for TopKConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "top = TopK::new(window {}, k {})", self.window, self.k)
    }
}

/// What is wrong with a line, in the order the checks are made.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// No fields at all (empty or whitespace only).
    Empty,
    /// The first field is not a whole number in 0..=u64::MAX.
    BadTimestamp { token: String },
    /// Only a timestamp.
    MissingUser,
    /// A timestamp and a user, no action.
    MissingAction,
    /// More than three fields (`found` of them).
    ExtraFields { found: usize },
}

/// A line that could not be ingested; it changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LineError {
    /// 1-based: the n-th line given to `ingest_line`, malformed ones included.
    pub line: u64,
    pub kind: Malformed,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        match &self.kind {
            Malformed::Empty => write!(f, "empty line"),
            Malformed::BadTimestamp { token } => write!(f, "timestamp `{token}` is not a whole number"),
            Malformed::MissingUser => write!(f, "missing user_id and action"),
            Malformed::MissingAction => write!(f, "missing action"),
            Malformed::ExtraFields { found } => write!(f, "{found} fields, expected 3 (timestamp user_id action)"),
        }
    }
}

impl std::error::Error for LineError {}

/// A well-formed line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub timestamp: u64,
    pub user: &'a str,
    pub action: &'a str,
}

/// The line grammar: three fields separated by ASCII whitespace (spaces, tabs, a
/// trailing `\r`), a decimal timestamp first. Errors are checked in [`Malformed`]'s
/// order. Given to learners: parsing is not the point of the exercise.
pub fn parse_line(line: &str) -> Result<Event<'_>, Malformed> {
    let mut fields = line.split_ascii_whitespace();
    let Some(first) = fields.next() else { return Err(Malformed::Empty) };
    let timestamp = first.parse::<u64>().map_err(|_| Malformed::BadTimestamp { token: first.to_string() })?;
    let user = fields.next().ok_or(Malformed::MissingUser)?;
    let action = fields.next().ok_or(Malformed::MissingAction)?;
    let extra = fields.count();
    if extra > 0 {
        return Err(Malformed::ExtraFields { found: 3 + extra });
    }
    Ok(Event { timestamp, user, action })
}

/// What happened to a well-formed line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ingested {
    /// Inside the window: counted.
    Counted,
    /// At or before the window's start: dropped, and added to `late_events`.
    Late,
}

/// The contract. Implement it for your `TopK` in `exercises/src/top_k.rs`.
///
/// * Stream time T is the largest timestamp ingested so far. The window is (T−W, T]:
///   an event counts iff T − W < timestamp ≤ T.
/// * An event with timestamp > T moves T forward (and older events may leave the
///   window). One inside the window but older than T (out of order) is counted.
///   One with timestamp ≤ T − W is late: dropped, counted in `late_events`, T unchanged.
/// * `top()`: the users with the most events in the window, count descending, ties by
///   user id ascending (byte order), at most k, never a zero count.
/// * A malformed line returns `LineError` with its 1-based line number (every line
///   given counts) and changes nothing else. Use [`parse_line`].
/// * Memory follows the window: once every event of a user has left it, the user is
///   forgotten; `memory_entries` (what you hold: users, buffered events or buckets)
///   stays within a constant factor of what the window needs.
pub trait SlidingTopK: Send + Sized {
    fn new(config: TopKConfig) -> Self;
    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError>;
    fn top(&self) -> Vec<(String, u64)>;
    /// Well-formed events dropped for being late, so far.
    fn late_events(&self) -> u64;
    /// Users with at least one event in the window.
    fn users_in_window(&self) -> usize;
    /// Entries held in memory (users + events or time buckets).
    fn memory_entries(&self) -> usize;
}

/// The tracker under test, behind a trait object so the suite is compiled once.
pub trait ErasedTopK: Send {
    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError>;
    fn top(&self) -> Vec<(String, u64)>;
    fn late_events(&self) -> u64;
    fn users_in_window(&self) -> usize;
    fn memory_entries(&self) -> usize;
}

impl<T: SlidingTopK> ErasedTopK for T {
    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError> {
        SlidingTopK::ingest_line(self, line)
    }
    fn top(&self) -> Vec<(String, u64)> {
        SlidingTopK::top(self)
    }
    fn late_events(&self) -> u64 {
        SlidingTopK::late_events(self)
    }
    fn users_in_window(&self) -> usize {
        SlidingTopK::users_in_window(self)
    }
    fn memory_entries(&self) -> usize {
        SlidingTopK::memory_entries(self)
    }
}

pub type Factory = fn(TopKConfig) -> Box<dyn ErasedTopK>;

pub fn factory<T: SlidingTopK + 'static>() -> Factory {
    |config| Box::new(T::new(config))
}

// ---------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Model {
    config: TopKConfig,
    lines: u64,
    stream_time: Option<u64>,
    /// (timestamp, user) of every event in the window.
    events: Vec<(u64, String)>,
    late: u64,
}

impl Model {
    fn window_start(&self) -> Option<u64> {
        // Events with timestamp ≤ start are out; None = nothing is out yet.
        self.stream_time.and_then(|t| t.checked_sub(self.config.window))
    }

    fn ingest(&mut self, line: &str) -> Result<Ingested, LineError> {
        self.lines += 1;
        let event = parse_line(line).map_err(|kind| LineError { line: self.lines, kind })?;
        if self.window_start().is_some_and(|start| event.timestamp <= start) {
            self.late += 1;
            return Ok(Ingested::Late);
        }
        self.stream_time = Some(self.stream_time.map_or(event.timestamp, |t| t.max(event.timestamp)));
        self.events.push((event.timestamp, event.user.to_string()));
        if let Some(start) = self.window_start() {
            self.events.retain(|(ts, _)| *ts > start);
        }
        self.events.sort();
        Ok(Ingested::Counted)
    }

    fn counts(&self) -> BTreeMap<&str, u64> {
        let mut counts = BTreeMap::new();
        for (_, user) in &self.events {
            *counts.entry(user.as_str()).or_insert(0) += 1;
        }
        counts
    }

    fn top(&self) -> Vec<(String, u64)> {
        let mut ranked: Vec<(String, u64)> = self.counts().into_iter().map(|(u, c)| (u.to_string(), c)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(self.config.k);
        ranked
    }
}

/// One line fed in, and everything observable right after it.
#[derive(Clone, PartialEq, Eq)]
pub struct Output {
    result: Result<Ingested, LineError>,
    top: Vec<(String, u64)>,
    late: u64,
    users: usize,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            Ok(i) => write!(f, "Ok({i:?})")?,
            Err(e) => write!(f, "Err({e})")?,
        }
        let top: Vec<String> = self.top.iter().map(|(u, c)| format!("{u}:{c}")).collect();
        write!(f, "; top [{}]; late_events {}; users_in_window {}", top.join(", "), self.late, self.users)
    }
}

/// A line, as the op of a sequence.
#[derive(Clone, PartialEq, Eq)]
pub struct Line(pub String);

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ingest_line({:?})", self.0)
    }
}

struct TopKSpec;

impl Spec for TopKSpec {
    type Config = TopKConfig;
    type Op = Line;
    type Output = Output;
    type Model = Model;

    fn model(config: &TopKConfig) -> Model {
        Model { config: *config, lines: 0, stream_time: None, events: Vec::new(), late: 0 }
    }

    fn step(model: &mut Model, op: &Line) -> Output {
        let result = model.ingest(&op.0);
        Output { result, top: model.top(), late: model.late, users: model.counts().len() }
    }
}

fn observe(tracker: &mut dyn ErasedTopK, line: &Line) -> Output {
    let result = tracker.ingest_line(&line.0);
    Output { result, top: tracker.top(), late: tracker.late_events(), users: tracker.users_in_window() }
}

fn replay_on(make: Factory, config: &TopKConfig, lines: &[Line]) -> CaseResult {
    replay::<TopKSpec, _>(config, lines, |config| {
        let mut tracker = make(*config);
        move |line: &Line| observe(tracker.as_mut(), line)
    })
}

// ---------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------

fn line(text: &str) -> Line {
    Line(text.to_string())
}

fn config(window: u64, k: usize) -> TopKConfig {
    TopKConfig::new(window, k).expect("valid config")
}

const USERS: [&str; 6] = ["ann", "bob", "cy", "dee", "eve", "fay"];

/// Users are interchangeable: only enumerate sequences that introduce them in order.
fn users_in_first_use_order(lines: &[Line]) -> bool {
    let mut next_new = 0;
    for l in lines {
        if let Ok(event) = parse_line(&l.0) {
            let Some(index) = USERS.iter().position(|u| *u == event.user) else { continue };
            if index > next_new {
                return false;
            }
            if index == next_new {
                next_new += 1;
            }
        }
    }
    true
}

/// In-order and out-of-order timestamps around a window of 3, three users, and one
/// malformed line.
fn short_letters(with_malformed: bool) -> Vec<Line> {
    let mut letters = Vec::new();
    for ts in [1, 3, 4, 6] {
        for user in &USERS[..3] {
            letters.push(Line(format!("{ts} {user} click")));
        }
    }
    if with_malformed {
        letters.push(line("7 ann"));
    }
    letters
}

fn random_lines() -> impl Strategy<Value = (TopKConfig, Vec<Line>)> {
    let good = (
        0u64..40,
        0usize..USERS.len(),
        prop::sample::select(vec!["login", "view", "buy"]),
        prop::sample::select(vec![" ", "\t", "  "]),
    )
        .prop_map(|(ts, user, action, sep)| Line(format!("{ts}{sep}{}{sep}{action}", USERS[user])));
    let bad = prop::sample::select(vec![
        "",
        "   ",
        "12",
        "12 ann",
        "12 ann view extra",
        "x12 ann view",
        "-3 ann view",
        "1.5 bob buy",
        "99999999999999999999 ann view",
    ])
    .prop_map(line);
    let lines = proptest::collection::vec(prop_oneof![9 => good, 1 => bad], 1..=60);
    (prop::sample::select(vec![1u64, 3, 5, 10]), 1usize..=4, lines).prop_map(|(w, k, lines)| (config(w, k), lines))
}

fn malformed_scenarios() -> Vec<(TopKConfig, Vec<Line>)> {
    let w = config(10, 3);
    vec![
        (w, vec![line("5 ann view"), line(""), line("   \t "), line("6 bob view")]),
        (w, vec![line("5 ann view"), line("6"), line("7 bob"), line("8 bob view now"), line("9 cy view")]),
        (
            w,
            vec![
                line("abc ann view"),
                line("-5 ann view"),
                line("+5 ann view"),
                line("5.0 ann view"),
                line("18446744073709551616 ann view"),
                line("18446744073709551615 ann view"),
            ],
        ),
        // Tabs, repeated spaces and a trailing \r are all field separators.
        (w, vec![line("5\tann\tview"), line("6  bob   view"), line("7 cy view\r"), line(" 8 ann view ")]),
        // A malformed line with a future timestamp must not move stream time.
        (
            w,
            vec![
                line("5 ann view"),
                line("100 bob"),
                line("6 bob view"),
                line("100 bob view extra"),
                line("7 cy view"),
            ],
        ),
        // User ids are case-sensitive and compared by bytes for ties.
        (config(10, 5), vec![line("1 Bob x"), line("1 bob x"), line("1 Ann x"), line("1 ann x"), line("1 émile x")]),
    ]
}

fn edge_scenarios() -> Vec<(TopKConfig, Vec<Line>)> {
    vec![
        // Window boundaries: (T−W, T] — the event at exactly T−W is out, T−W+1 is in.
        (config(3, 5), vec![line("10 ann x"), line("7 bob x"), line("8 cy x"), line("11 dee x"), line("13 eve x")]),
        // Late events don't move time and are counted as late; out-of-order ones count.
        (
            config(5, 3),
            vec![
                line("20 ann x"),
                line("14 bob x"),
                line("15 bob x"),
                line("16 cy x"),
                line("21 ann x"),
                line("3 ann x"),
            ],
        ),
        // k bounds the answer; ties by user id; no zero counts after users leave.
        (
            config(2, 2),
            vec![line("1 cy x"), line("1 bob x"), line("1 ann x"), line("2 cy x"), line("4 dee x"), line("9 eve x")],
        ),
        // Window 1: only events at exactly T count.
        (config(1, 3), vec![line("5 ann x"), line("5 bob x"), line("6 ann x"), line("5 cy x"), line("6 cy x")]),
        // Timestamps near the top of u64 and a huge window.
        (config(u64::MAX, 2), vec![line("0 ann x"), line("18446744073709551615 bob x"), line("1 cy x")]),
        (
            config(10, 2),
            vec![
                line("18446744073709551615 ann x"),
                line("18446744073709551606 bob x"),
                line("18446744073709551605 cy x"),
            ],
        ),
    ]
}

/// A long stream of unique users over steadily advancing time: memory must follow
/// the window, and fall back once everyone has left it.
fn memory_follows_window(make: Factory) -> CaseResult {
    const WINDOW: u64 = 100;
    let mut tracker =
        guarded(|| make(config(WINDOW, 10))).map_err(|p| p.into_case_error("TopK::new(window 100, k 10)"))?;
    let events_per_tick = 20u64;
    for ts in 0..2_000u64 {
        for i in 0..events_per_tick {
            let line = format!("{ts} user{} view", ts * events_per_tick + i);
            if let Err(e) = tracker.ingest_line(&line) {
                return Err(CaseError::failed(format!("ingest_line({line:?}) returned Err({e})")));
            }
        }
        let in_window = (WINDOW.min(ts + 1) * events_per_tick) as usize;
        let (users, held) = (tracker.users_in_window(), tracker.memory_entries());
        if users != in_window {
            return Err(CaseError::failed(format!(
                "at stream time {ts}: users_in_window() = {users}, expected {in_window}"
            )));
        }
        if held > 4 * in_window + 64 {
            return Err(CaseError::failed(format!(
                "at stream time {ts}, with {in_window} events (all distinct users) in the window, memory_entries() = {held}: \
                 memory must follow the window (at most 4 × {in_window} + 64)"
            )));
        }
    }
    let far = "1000000 last view";
    tracker.ingest_line(far).map_err(|e| CaseError::failed(format!("ingest_line({far:?}) returned Err({e})")))?;
    let (users, held) = (tracker.users_in_window(), tracker.memory_entries());
    if users != 1 || held > 8 {
        return Err(CaseError::failed(format!(
            "after a jump far beyond every event, users_in_window() = {users} (expected 1) and memory_entries() = {held} (expected at most 8)"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------

pub const EXERCISE: &str = "top_k";
pub const L1: Level = Level { number: 1, name: "window" };
pub const L2: Level = Level { number: 2, name: "out_of_order" };
pub const L3: Level = Level { number: 3, name: "malformed_input" };
pub const L4: Level = Level { number: 4, name: "memory" };

pub fn suite(make: Factory) -> Vec<Case> {
    let case = |level, name, hint, run: fn(Factory) -> CaseResult| {
        Case::new(EXERCISE, level, name, hint, QUICK, move || run(make))
    };
    vec![
        case(L1, "in_order_sequences",
            "Every short in-order stream over 3 users, window 3, k 1-2. Count the events with T−W < timestamp ≤ T; rank by count descending, then user id ascending.",
            |make| {
                let in_order = |lines: &[Line]| {
                    users_in_first_use_order(lines)
                        && lines.windows(2).all(|w| parse_line(&w[0].0).ok().map(|e| e.timestamp) <= parse_line(&w[1].0).ok().map(|e| e.timestamp))
                };
                exhaustive(&[config(3, 1), config(3, 2)], |_| short_letters(false), 5, in_order, |c, lines| replay_on(make, c, lines))
            }),
        case(L1, "edges",
            "Edge cases: the event at exactly T−W is out of the window; k bounds the answer; users whose events all left are not listed; window 1; timestamps near u64::MAX.",
            |make| edge_scenarios().iter().try_for_each(|(c, lines)| replay_on(make, c, lines))),
        case(L2, "short_sequences",
            "Every short stream in any order: an older event still inside the window is counted (it does not move T); one at or before T−W is late: dropped and counted in late_events.",
            |make| exhaustive(&[config(3, 2)], |_| short_letters(true), 5, users_in_first_use_order, |c, lines| replay_on(make, c, lines))),
        case(L2, "random_sequences",
            "Longer random streams with jittered timestamps, windows 1-10, k 1-4, and some malformed lines.",
            |make| random(random_lines(), Budget::default(), |(c, lines)| replay_on(make, c, lines))),
        case(L3, "malformed_lines",
            "Malformed lines (empty, bad or out-of-range timestamp, missing or extra fields) return LineError with the 1-based number of the line \
             (every line counts, bad ones too) and change nothing: parse fully before touching any state. parse_line does the parsing for you.",
            |make| malformed_scenarios().iter().try_for_each(|(c, lines)| replay_on(make, c, lines))),
        case(L4, "memory_follows_window",
            "40,000 distinct users over a sliding window: drop events (or time buckets) as they leave the window and forget users whose count reaches 0, \
             so memory_entries() follows the window and falls back when it moves on.",
            memory_follows_window),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_checks_in_order() {
        assert_eq!(parse_line("5 ann view"), Ok(Event { timestamp: 5, user: "ann", action: "view" }));
        assert_eq!(parse_line(" \t"), Err(Malformed::Empty));
        assert_eq!(parse_line("x"), Err(Malformed::BadTimestamp { token: "x".into() }));
        assert_eq!(
            parse_line("x y z w"),
            Err(Malformed::BadTimestamp { token: "x".into() }),
            "timestamp is checked before the count"
        );
        assert_eq!(parse_line("5"), Err(Malformed::MissingUser));
        assert_eq!(parse_line("5 ann"), Err(Malformed::MissingAction));
        assert_eq!(parse_line("5 ann view now"), Err(Malformed::ExtraFields { found: 4 }));
        assert_eq!(parse_line("7 cy view\r").map(|e| e.action), Ok("view"));
        assert!(parse_line("18446744073709551616 a b").is_err());
        assert_eq!(
            LineError { line: 7, kind: Malformed::BadTimestamp { token: "1.5".into() } }.to_string(),
            "line 7: timestamp `1.5` is not a whole number"
        );
    }

    #[test]
    fn model_window_is_half_open_and_late_events_do_not_move_time() {
        let mut model = TopKSpec::model(&config(3, 5));
        for l in ["10 ann x", "7 bob x", "8 cy x"] {
            TopKSpec::step(&mut model, &line(l));
        }
        let out = TopKSpec::step(&mut model, &line("11 dee x"));
        assert_eq!(out.top, vec![("ann".to_string(), 1), ("dee".to_string(), 1)], "8 ≤ 11−3 left the window");
        assert_eq!(out.late, 1, "7 was late when it arrived");
        let out = TopKSpec::step(&mut model, &line("oops"));
        assert_eq!(out.result, Err(LineError { line: 5, kind: Malformed::BadTimestamp { token: "oops".into() } }));
    }

    #[test]
    fn config_errors_are_typed() {
        assert_eq!(TopKConfig::new(0, 1), Err(TopKConfigError::ZeroWindow));
        assert_eq!(TopKConfig::new(1, 0), Err(TopKConfigError::ZeroK));
    }
}
