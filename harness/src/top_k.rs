//! Exercise: the top K most active users over a sliding window of a log stream of
//! `timestamp user_id action` lines. Holds the contract ([`SlidingTopK`]), the line
//! grammar and its errors, the model and the graded suite. Semantics:
//! `shared/spec/others.md`, restated on the trait.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::{self, Write as _};

use proptest::prelude::*;

use crate::heap::{show_bytes, HeapMeter};
use crate::isolation::trying;
use crate::sequential::{exhaustive, random, replay, Budget, Spec};
use crate::suite::{guarded, with_hint, Case, CaseError, CaseResult, Level, QUICK_DEADLINE as QUICK};
use crate::watchdog;

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

/// The line grammar: three fields separated by runs of ASCII whitespace (space, `\t`,
/// `\n`, form feed `\x0C`, `\r`; leading and trailing runs are ignored). Nothing else
/// separates fields: a no-break space (U+00A0), any other Unicode space or a vertical
/// tab (`\x0B`) is part of the field it sits in.
///
/// * timestamp: what `u64::from_str` accepts: ASCII digits with an optional leading
///   `+`, leading zeros allowed, 0..=u64::MAX.
/// * user_id: any run of non-separator characters, kept exactly: digits, punctuation,
///   Unicode, any case (`Alice` and `alice` are two users; no normalisation, so `é`
///   and `e` + U+0301 are two users too).
/// * action: likewise; it is not used.
///
/// Errors are checked in [`Malformed`]'s order. Given to learners: parsing is not the
/// point of the exercise.
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

/// Heap bytes a tracker may hold for each event in the window (see [`SlidingTopK`]'s
/// memory bound), on top of [`HEAP_PER_ID_BYTE`] per byte of the event's user id.
/// Room for a few maps and ordered sets keyed by user plus per-event or per-timestamp
/// storage, with the spare capacity that growing collections keep.
pub const HEAP_PER_EVENT: usize = 1024;
/// Heap bytes a tracker may hold per byte of an in-window event's user id: a few
/// copies of each id (in a queue of events, a count map and a ranking).
pub const HEAP_PER_ID_BYTE: usize = 4;
/// Fixed heap allowance on top of what the window needs.
pub const HEAP_SLACK: usize = 64 * 1024;

/// The contract. Implement it for your `TopK` in `exercises/src/top_k.rs`.
///
/// * Lines follow [`parse_line`]'s grammar; use it. User ids are exact strings:
///   case-sensitive, any Unicode, no normalisation.
/// * Stream time T is the largest timestamp ingested so far. The window is (T−W, T]:
///   an event counts iff T − W < timestamp ≤ T. While T < W nothing has left the
///   window (T − W does not exist; timestamps span 0..=u64::MAX and W up to u64::MAX,
///   so mind overflow).
/// * An event with timestamp > T moves T forward (and older events may leave the
///   window). One inside the window but older than T (out of order) is counted.
///   One with timestamp ≤ T − W is late: dropped, counted in `late_events`, T unchanged.
/// * `top()`: the users with the most events in the window, count descending, ties by
///   user id ascending (byte order, which for UTF-8 is code point order: `B` < `a`,
///   `user10` < `user9`), at most k (k may be as large as `usize::MAX`), never a zero
///   count.
/// * A malformed line returns `LineError` with its 1-based line number (every line
///   given counts) and changes nothing else.
/// * Memory follows the window, measured on the real heap after every call, whether
///   or not `top()` is ever read: what the tracker holds stays within [`HEAP_SLACK`]
///   plus the most the window has needed at any moment so far, where each event in
///   the window needs [`HEAP_PER_EVENT`] bytes plus [`HEAP_PER_ID_BYTE`] per byte of
///   its user id. Spare capacity kept from a busier moment is fine; anything that
///   grows with the whole stream is not: users whose events all left (an intern pool,
///   zero counts), events that left the window, late or malformed lines.
pub trait SlidingTopK: Send + Sized {
    fn new(config: TopKConfig) -> Self;
    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError>;
    fn top(&self) -> Vec<(String, u64)>;
    /// Well-formed events dropped for being late, so far.
    fn late_events(&self) -> u64;
    /// Users with at least one event in the window.
    fn users_in_window(&self) -> usize;
}

/// The tracker under test, behind a trait object so the suite is compiled once.
pub trait ErasedTopK: Send {
    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError>;
    fn top(&self) -> Vec<(String, u64)>;
    fn late_events(&self) -> u64;
    fn users_in_window(&self) -> usize;
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

/// A user id as a report shows it: as is when plain, else quoted with the characters
/// a reader could not tell apart (spaces, controls, combining marks) escaped.
fn show_id(id: &str) -> String {
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_graphic()) {
        return id.to_string();
    }
    let mut shown = String::from("\"");
    for c in id.chars() {
        let invisible = c.is_whitespace()
            || c.is_control()
            || matches!(c, '\u{300}'..='\u{36F}' | '\u{200B}'..='\u{200F}' | '\u{FEFF}' | '"' | '\\');
        if invisible {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown.push('"');
    shown
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            Ok(i) => write!(f, "Ok({i:?})")?,
            Err(e) => write!(f, "Err({e})")?,
        }
        let top: Vec<String> = self.top.iter().map(|(u, c)| format!("{}:{c}", show_id(u))).collect();
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

/// Feeds `line` and reads everything back, telling `call` which call is running (so
/// a panic is put down to the right behaviour).
fn observe(tracker: &mut dyn ErasedTopK, line: &Line, call: &dyn Fn(&'static str)) -> Output {
    call("ingest_line");
    let result = tracker.ingest_line(&line.0);
    call("top");
    let top = tracker.top();
    call("late_events");
    let late = tracker.late_events();
    call("users_in_window");
    let users = tracker.users_in_window();
    Output { result, top, late, users }
}

// ---------------------------------------------------------------------------------
// What differs: a report names the behaviour, whichever case caught it
// ---------------------------------------------------------------------------------

/// The step a replay is at: enough to say which behaviour a difference belongs to.
struct Watch {
    model: Model,
    /// Stream time before the current line.
    time_before: Option<u64>,
    line: Option<Line>,
    expected: Option<Output>,
    actual: Option<Output>,
    /// The call in progress on the tracker.
    call: &'static str,
}

impl Watch {
    fn new(config: &TopKConfig) -> Self {
        Watch {
            model: TopKSpec::model(config),
            time_before: None,
            line: None,
            expected: None,
            actual: None,
            call: "TopK::new",
        }
    }

    /// Steps the watch's own model over `line` before the tracker sees it.
    fn before(&mut self, line: &Line) {
        self.time_before = self.model.stream_time;
        self.line = Some(line.clone());
        self.expected = Some(TopKSpec::step(&mut self.model, line));
        self.actual = None;
    }
}

/// Adds, to a failure report, the behaviour that differed at its last step.
fn explain(error: CaseError, watch: &Watch) -> CaseError {
    match error {
        CaseError::Failed(report) => CaseError::Failed(with_hint(report.trim_end(), &diagnose(watch, &report))),
        other => other,
    }
}

/// ASCII whitespace other than the plain space: separators a hand-written parser may miss.
fn has_other_ascii_space(text: &str) -> bool {
    text.chars().any(|c| c.is_ascii_whitespace() && c != ' ')
}

fn has_unicode_space(text: &str) -> bool {
    text.chars().any(|c| (c.is_whitespace() && !c.is_ascii_whitespace()) || c == '\u{B}')
}

/// The behaviour behind the first difference (or the panic) at the watch's last step.
fn diagnose(watch: &Watch, report: &str) -> String {
    let (Some(line), Some(expected)) = (&watch.line, &watch.expected) else {
        return "TopK::new must accept every valid TopKConfig (window ≥ 1, k ≥ 1, up to u64::MAX and usize::MAX)."
            .to_string();
    };
    let config = watch.model.config;
    let (w, k) = (config.window, config.k);
    let window = |t: Option<u64>| match t {
        None => "nothing ingested yet".to_string(),
        Some(t) => match t.checked_sub(w) {
            Some(start) => format!("T = {t}, W = {w}: the window is ({start}, {t}]"),
            None => format!("T = {t} < W = {w}: nothing has left the window yet (T − W does not exist)"),
        },
    };
    let Some(actual) = &watch.actual else {
        if watch.call == "top" && k == usize::MAX {
            return format!(
                "top() panicked with k = {k} (usize::MAX): k only bounds the answer; don't allocate k slots \
                 or compute k + 1."
            );
        }
        if report.contains("overflow") && watch.call == "ingest_line" {
            return format!(
                "arithmetic overflowed on {line:?} ({}). Timestamps span 0..=u64::MAX and W reaches u64::MAX: \
                 T − W may not exist and ts + W may not fit; compare with checked or saturating arithmetic.",
                window(watch.time_before)
            );
        }
        return format!(
            "{} panicked on {line:?}; the contract admits this line ({}).",
            watch.call,
            window(watch.time_before)
        );
    };
    let event = parse_line(&line.0);
    if expected.result != actual.result {
        return match (&expected.result, &actual.result) {
            (Err(e), Ok(_)) if has_unicode_space(&line.0) => format!(
                "this line is malformed ({e}): only ASCII whitespace separates fields (parse_line); a no-break \
                 space, another Unicode space or a vertical tab is part of the field it sits in."
            ),
            (Err(e), Ok(_)) => format!("this line is malformed ({e}): it must be rejected and change nothing."),
            (Err(e), Err(a)) if e.line != a.line => format!(
                "line numbers count every line given to ingest_line, malformed ones included: this is line {}.",
                e.line
            ),
            (Err(_), Err(_)) | (Ok(_), Err(_)) if has_other_ascii_space(&line.0) => {
                "any run of ASCII whitespace separates fields: spaces, tabs, form feeds, \\r and \\n alike (leading and \
                 trailing runs are ignored), as parse_line does."
                    .to_string()
            }
            (Ok(_), Err(_)) => format!(
                "this line is well-formed (parse_line accepts it): a user id is any run of characters other than \
                 ASCII whitespace (digits, punctuation, Unicode, any case{}); a timestamp is what u64::from_str \
                 accepts (leading zeros, a leading +).",
                if has_unicode_space(&line.0) { ", Unicode spaces included" } else { "" }
            ),
            (Err(e), Err(_)) => format!(
                "{e}: errors are checked in Malformed's order (empty, timestamp, user, action, extra fields), \
                 as parse_line does."
            ),
            (Ok(Ingested::Late), Ok(_)) => format!(
                "{} before this line, so an event at {} is late: dropped, added to late_events, T unchanged.",
                window(watch.time_before),
                event.map(|e| e.timestamp).unwrap_or_default()
            ),
            (Ok(_), Ok(_)) => match (event, watch.time_before) {
                (Ok(e), Some(t)) if e.timestamp > t => {
                    format!("an event newer than T = {t} is never late: it moves T forward to {}.", e.timestamp)
                }
                _ => format!(
                    "{} before this line: an event inside it is counted, even out of order.",
                    window(watch.time_before)
                ),
            },
        };
    }
    if let Err(e) = &expected.result {
        return format!(
            "this line is malformed ({e}) and was rejected, but it must also change nothing: not T, not the \
             window, not a count. Parse fully before touching any state."
        );
    }
    let model_counts = watch.model.counts();
    let now = window(watch.model.stream_time);
    if expected.top != actual.top {
        let folded = |a: &str, b: &str| a != b && a.to_lowercase() == b.to_lowercase();
        let involved: Vec<&str> = expected.top.iter().chain(&actual.top).map(|(u, _)| u.as_str()).collect();
        if involved.iter().any(|a| model_counts.keys().any(|b| folded(a, b))) {
            return "user ids are case-sensitive and compared byte for byte: `Alice` and `alice` are two users, \
                    and a tie between them goes to `Alice` (uppercase sorts first in byte order)."
                .to_string();
        }
        if let Some((name, _)) = actual.top.iter().find(|(u, _)| !model_counts.contains_key(u.as_str())) {
            return format!(
                "{} is listed but has no event in the window ({now}): a user id is kept exactly as given \
                 (no trimming, truncation or normalisation) and users whose events all left are not listed.",
                show_id(name)
            );
        }
        if actual.top.iter().any(|(_, n)| *n == 0) {
            return "a user whose events all left the window is not listed: never a zero count.".to_string();
        }
        if actual.top.len() > k {
            return format!("top() lists at most k = {k} users.");
        }
        if let Some((name, n)) = actual.top.iter().find(|(u, n)| model_counts.get(u.as_str()) != Some(n)) {
            return format!(
                "{} has {} event(s) in the window ({now}), not {n}: count exactly the events with T − W < ts ≤ T.",
                show_id(name),
                model_counts.get(name.as_str()).copied().unwrap_or_default(),
            );
        }
        // Every listed count is right: what differs is the order or the choice of users.
        let descending = actual.top.windows(2).all(|p| p[0].1 >= p[1].1);
        let mut sorted_actual = actual.top.clone();
        sorted_actual.sort();
        let mut sorted_expected = expected.top.clone();
        sorted_expected.sort();
        let ties = "ties are broken by user id ascending in byte order (`B` < `a`, `user10` < `user9`, ASCII \
                    before `é`): compare the ids as str/bytes, nothing else.";
        if sorted_actual == sorted_expected {
            return if descending {
                ties.to_string()
            } else {
                "top() is ordered by count descending first.".to_string()
            };
        }
        let listed = |u: &str| actual.top.iter().any(|(a, _)| a == u);
        if let Some((name, n)) = expected.top.iter().find(|(u, _)| !listed(u)) {
            let lowest_listed = actual.top.iter().map(|(_, n)| *n).min();
            if actual.top.len() == expected.top.len() && descending && lowest_listed == Some(*n) {
                return format!("{} ({n} events) ties with a user listed instead: {ties}", show_id(name));
            }
            return format!(
                "{} has {n} event(s) in the window ({now}) and belongs in top(): {}",
                show_id(name),
                "an event leaves the window only when T − W ≥ its timestamp (nothing leaves while T < W), and no \
                 housekeeping may drop an event still in the window."
            );
        }
        return format!("top() must list the (at most) k = {k} users with the most events in the window ({now}).");
    }
    if expected.late != actual.late {
        return "late_events counts every well-formed event dropped for being late (ts ≤ T − W when it arrived), \
                and nothing else."
            .to_string();
    }
    if expected.users != actual.users {
        return format!(
            "users_in_window() is the number of distinct users with an event in the window ({now}): not capped \
             at k, and users whose events all left are gone."
        );
    }
    "the outputs differ".to_string()
}

/// Replays `lines` on a fresh tracker and the model; a failure report ends with the
/// behaviour that differed.
fn replay_on(make: Factory, config: &TopKConfig, lines: &[Line]) -> CaseResult {
    // Only what the model cannot rebuild is kept while replaying (exhaustive cases
    // replay hundreds of thousands of sequences): the step, the call, the output.
    let seen = RefCell::new((0usize, "TopK::new", None::<Output>));
    replay::<TopKSpec, _>(config, lines, |config| {
        let mut tracker = make(*config);
        let seen = &seen;
        move |line: &Line| {
            {
                let mut seen = seen.borrow_mut();
                seen.0 += 1;
                seen.2 = None;
            }
            let actual = observe(tracker.as_mut(), line, &|call| seen.borrow_mut().1 = call);
            seen.borrow_mut().2 = Some(actual.clone());
            actual
        }
    })
    .map_err(|error| {
        let (steps, call, actual) = seen.into_inner();
        let mut watch = Watch::new(config);
        for line in &lines[..steps] {
            watch.before(line);
        }
        watch.call = call;
        watch.actual = actual;
        explain(error, &watch)
    })
}

/// How many steps a long replay's report shows before the first difference.
const LONG_CONTEXT: usize = 8;

/// Replays a long stream (thousands of lines) like [`replay_on`], but reports only
/// the last few steps before the first difference: the whole transcript would bury it.
fn replay_long(make: Factory, config: &TopKConfig, name: &str, lines: &[Line]) -> CaseResult {
    trying(&format_args!("{config:?}; {name}: {} lines", lines.len()));
    let watch = RefCell::new(Watch::new(config));
    let mut tracker = guarded(|| make(*config)).map_err(|p| p.into_case_error(format!("{config:?}")))?;
    let mut recent: VecDeque<String> = VecDeque::with_capacity(LONG_CONTEXT + 1);
    for (index, line) in lines.iter().enumerate() {
        let step = index + 1;
        watch.borrow_mut().before(line);
        let expected = watch.borrow().expected.clone().expect("stepped");
        let header = |recent: &VecDeque<String>| {
            let elided = step - 1 - recent.len();
            let mut text =
                format!("counterexample: {name}, line {step} of a {}-line stream\n{config:?}\n", lines.len());
            if elided > 0 {
                let _ = writeln!(text, "      ... {elided} earlier lines, all matching ...");
            }
            for r in recent {
                text.push_str(r);
            }
            text
        };
        let observed = watchdog::call(format!("line {step}: {line:?}"), || {
            guarded(|| observe(tracker.as_mut(), line, &|call| watch.borrow_mut().call = call))
        });
        match observed {
            Ok(actual) if actual == expected => {
                if recent.len() == LONG_CONTEXT {
                    recent.pop_front();
                }
                recent.push_back(format!("{step:>6}. {line:?} -> {actual:?}\n"));
            }
            Ok(actual) => {
                watch.borrow_mut().actual = Some(actual.clone());
                let report = format!(
                    "{}{step:>6}. {line:?} -> {actual:?}\n        expected {expected:?}   <-- first difference",
                    header(&recent)
                );
                return Err(explain(CaseError::failed(report), &watch.borrow()));
            }
            Err(panic) => {
                let report = format!("{}{step:>6}. {line:?} -> (panicked; expected {expected:?})", header(&recent));
                return Err(explain(panic.into_case_error(report), &watch.borrow()));
            }
        }
    }
    Ok(())
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

/// User ids over the whole domain the grammar admits: case variants, digits, ids that
/// sort differently by bytes than "naturally", Unicode (composed and decomposed `é`,
/// CJK, emoji), punctuation, and characters that look like spaces but do not separate
/// fields (no-break space, vertical tab).
const ID_POOL: [&str; 16] = [
    "ann", "Ann", "ANN", "bob", "user9", "user10", "42", "é", "e\u{301}", "É", "日本", "🙂", "a\u{A0}b", "x\u{B}y",
    "_-.@:/", "Bob",
];

/// Malformed lines of every kind the grammar names, and the nearest well-formed and
/// ill-formed neighbours (leading `+`, fullwidth digits, Unicode spaces).
const ODD_LINES: [&str; 20] = [
    "",
    "   ",
    "\t\r",
    "12",
    "12 ann",
    "12 ann view extra",
    "x12 ann view",
    "-3 ann view",
    "+-3 ann view",
    "1.5 bob buy",
    "1e3 bob buy",
    "0x1F bob buy",
    "99999999999999999999 ann view",
    "18446744073709551616 ann view",
    "\u{FF15} ann view",
    "12\u{A0}ann view",
    "12 ann\u{A0}view",
    "12 ann view\u{3000}now",
    "12 ann view\tnow",
    "+12 Ann view",
];

/// One drawn line: a well-formed event (rendered against the stream's base time) or
/// one of [`ODD_LINES`].
#[derive(Clone, Debug)]
enum Draft {
    Event { offset: u64, form: &'static str, user: &'static str, action: &'static str, sep: &'static str },
    Odd(&'static str),
}

fn render(base: u64, drafts: &[Draft]) -> Vec<Line> {
    drafts
        .iter()
        .map(|d| match d {
            Draft::Event { offset, form, user, action, sep } => {
                let ts = base.saturating_add(*offset);
                Line(format!("{form}{ts}{sep}{user}{sep}{action}"))
            }
            Draft::Odd(text) => line(text),
        })
        .collect()
}

fn random_lines() -> impl Strategy<Value = (TopKConfig, Vec<Line>)> {
    let good = (
        // Jitter around the base, and now and then a jump as far as time goes.
        prop_oneof![12 => 0u64..40, 1 => Just(u64::MAX)],
        prop::sample::select(vec!["", "", "", "+", "0", " ", "\t"]),
        prop::sample::select(ID_POOL.to_vec()),
        prop::sample::select(vec!["login", "view", "buy", "Ω"]),
        prop::sample::select(vec![" ", " ", "\t", "  ", "\x0C", " \t "]),
    )
        .prop_map(|(offset, form, user, action, sep)| Draft::Event { offset, form, user, action, sep });
    let odd = prop::sample::select(ODD_LINES.to_vec()).prop_map(Draft::Odd);
    let drafts = proptest::collection::vec(prop_oneof![9 => good, 1 => odd], 1..=60);
    let window = prop::sample::select(vec![1u64, 2, 3, 5, 10, 1 << 63, u64::MAX - 1, u64::MAX]);
    let k = prop_oneof![4 => 1usize..=4, 1 => Just(usize::MAX)];
    let base = prop::sample::select(vec![0u64, 1_000_000, u64::MAX - 40]);
    (window, k, base, drafts).prop_map(|(w, k, base, drafts)| (config(w, k), render(base, &drafts)))
}

/// A small deterministic generator (SplitMix64): long streams need no shrinking, and
/// no proptest machinery, to be the same on every run.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Lines in the longest streams: past any housekeeping threshold up to 4,096 events.
const LONG_STREAM: usize = 5_000;

/// Long streams that cross any housekeeping threshold an implementation may use
/// (pruning every N events, compacting every N lines) and read the pruned state back
/// after every line: slow drift, heavy jitter with many late events, a huge window near
/// u64::MAX, unbounded k, huge gaps and malformed lines.
fn long_streams() -> Vec<(&'static str, TopKConfig, Vec<Line>)> {
    struct Shape {
        name: &'static str,
        config: TopKConfig,
        lines: usize,
        base: u64,
        /// Lines per timestamp unit, on average (time = line / pace).
        pace: u64,
        jitter: u64,
        users: u64,
        jump_percent: u64,
        odd_percent: u64,
    }
    let shapes = [
        Shape {
            name: "window 1, slow drift",
            config: config(1, 2),
            lines: LONG_STREAM,
            base: 0,
            pace: 3,
            jitter: 2,
            users: 12,
            jump_percent: 0,
            odd_percent: 1,
        },
        Shape {
            name: "window 7, heavy jitter",
            config: config(7, 3),
            lines: LONG_STREAM,
            base: 5,
            pace: 1,
            jitter: 12,
            users: 40,
            jump_percent: 0,
            odd_percent: 3,
        },
        Shape {
            name: "window 64, every user listed, huge gaps",
            config: config(64, usize::MAX),
            lines: LONG_STREAM / 2,
            base: 0,
            pace: 2,
            jitter: 20,
            users: 120,
            jump_percent: 1,
            odd_percent: 5,
        },
        Shape {
            name: "window 200 near u64::MAX",
            config: config(200, 5),
            lines: LONG_STREAM / 2,
            base: u64::MAX - 2_600,
            pace: 2,
            jitter: 50,
            users: 300,
            jump_percent: 0,
            odd_percent: 2,
        },
    ];
    let mut mix = Mix(0x0074_6f70_5f6b);
    shapes
        .iter()
        .map(|s| {
            let mut gap = 0u64;
            let lines = (0..s.lines as u64)
                .map(|i| {
                    if mix.chance(s.odd_percent) {
                        return line(ODD_LINES[mix.below(ODD_LINES.len() as u64) as usize]);
                    }
                    if s.jump_percent > 0 && mix.chance(s.jump_percent) {
                        gap = gap.saturating_add(1 << (20 + mix.below(30)));
                    }
                    let drift = s.base.saturating_add(gap).saturating_add(i / s.pace);
                    let ts = drift.saturating_add(mix.below(2 * s.jitter + 1)).saturating_sub(s.jitter);
                    let n = mix.below(s.users);
                    let user = match n % 4 {
                        0 => ID_POOL[(n / 4) as usize % ID_POOL.len()].to_string(),
                        1 => format!("user{n}"),
                        2 => format!("User{n}"),
                        _ => format!("ユーザー{n}"),
                    };
                    Line(format!("{ts} {user} view"))
                })
                .collect();
            (s.name, s.config, lines)
        })
        .collect()
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
                line("5.0 ann view"),
                line("18446744073709551616 ann view"),
                line("x y z w"),
                line("18446744073709551615 ann view"),
            ],
        ),
        // Tabs, repeated spaces, form feeds and a trailing \r\n are all field separators.
        (
            w,
            vec![
                line("5\tann\tview"),
                line("6  bob   view"),
                line("7 cy view\r"),
                line(" 8 ann view "),
                line("\x0C9\x0Cbob\x0Cview\r\n"),
            ],
        ),
        // Unicode spaces and the vertical tab separate nothing: the nearest rejects.
        (
            w,
            vec![
                line("5 ann view"),
                line("6\u{A0}bob view"),
                line("6 bob\u{A0}view"),
                line("6 bob\u{2003}view"),
                line("6 bob\u{B}view"),
                line("\u{FF16} bob view"),
                line("6 bob view"),
            ],
        ),
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
    ]
}

/// User ids are exact strings: every character the grammar admits, and every way two
/// ids can look alike without being the same.
fn user_id_scenarios() -> Vec<(TopKConfig, Vec<Line>)> {
    vec![
        // Case: three users, not one.
        (config(10, 5), vec![line("1 Alice x"), line("1 alice x"), line("2 ALICE x"), line("2 alice x")]),
        (config(10, 5), vec![line("1 Bob x"), line("1 bob x"), line("1 Ann x"), line("1 ann x"), line("1 émile x")]),
        // Ties in byte order: uppercase before lowercase, `user10` before `user9`,
        // punctuation and digits by their bytes, ASCII before accented letters.
        (
            config(10, usize::MAX),
            vec![
                line("1 user9 x"),
                line("1 user10 x"),
                line("1 b x"),
                line("1 B x"),
                line("1 é x"),
                line("1 f x"),
                line("1 _ x"),
                line("1 0 x"),
                line("1 ~ x"),
            ],
        ),
        // Unicode kept exactly: composed vs decomposed é, CJK, emoji, a no-break
        // space and a vertical tab inside an id, no-break spaces around one (no trim).
        (
            config(10, 9),
            vec![
                line("3 é x"),
                line("3 e\u{301} x"),
                line("4 日本語 x"),
                line("4 🙂 x"),
                line("4 🙂 x"),
                line("5 a\u{A0}b x"),
                line("5 a\u{B}b x"),
                line("5 ab x"),
                line("5 \u{A0}ab\u{A0} x"),
            ],
        ),
        // Ids that look like numbers or fields.
        (config(3, 4), vec![line("7 42 x"), line("7 007 x"), line("8 7 x"), line("8 42 42")]),
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
        // Window 1: only events at exactly T count; timestamp 0 is a timestamp.
        (config(1, 3), vec![line("0 ann x"), line("0 bob x"), line("1 ann x"), line("0 cy x"), line("1 cy x")]),
        // While T < W nothing has left the window, not even timestamp 0.
        (config(10, 3), vec![line("0 ann x"), line("9 bob x"), line("0 cy x"), line("10 dee x"), line("0 eve x")]),
        // Timestamps near the top of u64 and a huge window.
        (config(u64::MAX, 2), vec![line("0 ann x"), line("18446744073709551615 bob x"), line("1 cy x")]),
        (config(u64::MAX - 1, 3), vec![line("1 ann x"), line("2 bob x"), line("18446744073709551615 cy x")]),
        (
            config(10, 2),
            vec![
                line("18446744073709551615 ann x"),
                line("18446744073709551606 bob x"),
                line("18446744073709551605 cy x"),
            ],
        ),
        // A huge gap empties the window; what comes after starts afresh.
        (
            config(5, 3),
            vec![
                line("5 ann x"),
                line("6 bob x"),
                line("9223372036854775808 cy x"),
                line("6 bob x"),
                line("+9223372036854775807 dee x"),
            ],
        ),
        // k as large as usize::MAX: every user, nothing allocated per k.
        (config(4, usize::MAX), vec![line("1 ann x"), line("2 bob x"), line("2 bob x"), line("6 cy x")]),
        // Timestamps in every form u64::from_str accepts.
        (config(100, 3), vec![line("+7 ann x"), line("007 bob x"), line("0 cy x"), line("00 cy x")]),
    ]
}

// ---------------------------------------------------------------------------------
// Memory, on the real heap
// ---------------------------------------------------------------------------------

/// What the contract lets a tracker hold for one event in the window.
fn need(user_len: usize) -> usize {
    HEAP_PER_EVENT + HEAP_PER_ID_BYTE * user_len
}

/// A user id of a memory stream: distinct per `n`, some long and non-ASCII, written
/// into `buf` without allocating (it was reserved before the meter started).
fn memory_id(buf: &mut String, n: u64) {
    let _ = match n % 5 {
        0 => write!(buf, "ユーザー{n}-長い名前の利用者"),
        1 => write!(buf, "User{n}"),
        _ => write!(buf, "u{n}"),
    };
}

/// Feeds one line built by `write` (into a reserved buffer) and checks the heap
/// against the bound; `Ok(result)` of the ingest otherwise.
struct MemoryRun<'a> {
    tracker: Box<dyn ErasedTopK>,
    meter: HeapMeter,
    buf: String,
    lines: u64,
    /// Bytes the window needs now, and the most it has needed.
    need_now: usize,
    peak: usize,
    label: &'a str,
    /// The behaviour the lines being fed exercise: the hint of a memory failure.
    phase: &'static str,
}

impl<'a> MemoryRun<'a> {
    /// Starts the heap meter, then builds a tracker of `window` and k 3 under it. The
    /// line buffer is allocated first (and used once), so it is not counted as held.
    fn start(make: Factory, window: u64, label: &'a str) -> Result<Self, CaseError> {
        let mut buf = String::with_capacity(256);
        buf.push('x');
        let meter = HeapMeter::start();
        let tracker = guarded(|| make(config(window, 3)))
            .map_err(|p| p.into_case_error(format!("TopK::new(window {window}, k 3)")))?;
        Ok(MemoryRun { tracker, meter, buf, lines: 0, need_now: 0, peak: 0, label, phase: FORGET_WHAT_LEFT })
    }

    fn feed(&mut self, write: impl FnOnce(&mut String)) -> Result<Result<Ingested, LineError>, CaseError> {
        self.buf.clear();
        write(&mut self.buf);
        self.lines += 1;
        let result =
            watchdog::call(format!("ingest_line({:?})", self.buf), || guarded(|| self.tracker.ingest_line(&self.buf)))
                .map_err(|p| {
                    p.into_case_error(format!("{}: line {}: ingest_line({:?})", self.label, self.lines, self.buf))
                })?;
        let held = self.meter.held();
        let bound = HEAP_SLACK + self.peak.max(self.need_now);
        if held > bound {
            let report = format!(
                "{}: after line {} (ingest_line({:?})) the tracker holds {} on the heap; the window needs {} now and \
                 has needed at most {}, so the bound is {} (HEAP_SLACK {} + that peak): something grows with the \
                 whole stream.",
                self.label,
                self.lines,
                self.buf,
                show_bytes(held),
                show_bytes(self.need_now),
                show_bytes(self.peak),
                show_bytes(bound),
                show_bytes(HEAP_SLACK),
            );
            return Err(CaseError::failed(with_hint(report, self.phase)));
        }
        Ok(result)
    }

    fn expect(&self, what: &str, actual: impl fmt::Debug, expected: impl fmt::Debug) -> CaseResult {
        let (a, e) = (format!("{actual:?}"), format!("{expected:?}"));
        if a == e {
            return Ok(());
        }
        Err(CaseError::failed(format!(
            "{}: after line {} (ingest_line({:?})): {what} = {a}, expected {e}",
            self.label, self.lines, self.buf
        )))
    }
}

const FORGET_WHAT_LEFT: &str = "forget what left the window as it moves, on ingest (not only when top() is read): \
     events or buckets that left, and users whose count reached 0 (an intern pool or a map of every user ever seen \
     grows with the stream).";

/// Many more distinct users over the stream than the window ever holds, late and
/// malformed floods, then a jump that empties the window, with the heap held to the
/// contract's bound after every line and the pruned state read back at the end.
fn memory_follows_window(make: Factory) -> CaseResult {
    const WINDOW: u64 = 25;
    const PER_TICK: u64 = 20;
    const TICKS: u64 = 3_000;
    const FLOOD: u64 = 20_000;
    let mut run = MemoryRun::start(make, WINDOW, "TopK::new(window 25, k 3), 20 new users per timestamp")?;
    // Bytes each timestamp's events need, for the ones in the window (a ring of WINDOW).
    let mut tick_need = [0usize; WINDOW as usize];
    for ts in 0..TICKS {
        let slot = (ts % WINDOW) as usize;
        run.need_now -= tick_need[slot];
        tick_need[slot] = 0;
        for i in 0..PER_TICK {
            let n = ts * PER_TICK + i;
            let mut id_len = 0;
            let result = run.feed(|buf| {
                let _ = write!(buf, "{ts} ");
                let from = buf.len();
                memory_id(buf, n);
                id_len = buf.len() - from;
                buf.push_str(" view");
            })?;
            if result != Ok(Ingested::Counted) {
                return run.expect("the result", result, Ok::<_, LineError>(Ingested::Counted));
            }
            tick_need[slot] += need(id_len);
            run.need_now += need(id_len);
            run.peak = run.peak.max(run.need_now);
        }
    }
    let in_window = (WINDOW * PER_TICK) as usize;
    run.expect("users_in_window()", run.tracker.users_in_window(), in_window)?;
    // Late events from users never seen in the window, then malformed lines: neither
    // may leave anything behind.
    run.phase = "a late event is dropped: keep nothing of it (no set of late users, no log), only the count.";
    for n in 0..FLOOD {
        let result = run.feed(|buf| {
            let _ = write!(buf, "{} late{n} view", n % (TICKS - WINDOW));
        })?;
        if result != Ok(Ingested::Late) {
            return run.expect("the result", result, Ok::<_, LineError>(Ingested::Late));
        }
    }
    run.phase = "a malformed line changes nothing: keep nothing of it (no log of errors or lines).";
    for n in 0..FLOOD {
        let result = run.feed(|buf| {
            let _ = match n % 3 {
                0 => write!(buf, "x{n} bad{n} view"),
                1 => write!(buf, "{TICKS} bad{n}"),
                _ => write!(buf, "{TICKS} bad{n} view extra{n}"),
            };
        })?;
        if result.is_ok() {
            return run.expect("the result of a malformed line", result, "Err(LineError)");
        }
    }
    run.expect("late_events()", run.tracker.late_events(), FLOOD)?;
    // A jump far beyond every event: the window holds one event, read it back.
    run.phase = FORGET_WHAT_LEFT;
    run.need_now = need("last".len());
    let result = run.feed(|buf| buf.push_str("1000000000 last view"))?;
    run.expect("the result", result, Ok::<_, LineError>(Ingested::Counted))?;
    run.expect("users_in_window()", run.tracker.users_in_window(), 1)?;
    run.expect("top()", run.tracker.top(), vec![("last".to_string(), 1u64)])?;
    run.expect("late_events()", run.tracker.late_events(), FLOOD)?;
    Ok(())
}

/// The bound is fair to a tracker with one bucket per timestamp: one event per
/// timestamp over a window of 1,000, users repeating, for 6,000 lines.
fn memory_of_sparse_buckets(make: Factory) -> CaseResult {
    const WINDOW: u64 = 1_000;
    const LINES: u64 = 6_000;
    let mut run = MemoryRun::start(make, WINDOW, "TopK::new(window 1000, k 3), one event per timestamp")?;
    let mut ring = [0usize; WINDOW as usize];
    for ts in 0..LINES {
        let slot = (ts % WINDOW) as usize;
        run.need_now -= ring[slot];
        // Users repeat: 1,500 names over a window of 1,000 events.
        let n = (ts * 7) % 1_500;
        let mut id_len = 0;
        let result = run.feed(|buf| {
            let _ = write!(buf, "{ts} ");
            let from = buf.len();
            memory_id(buf, n);
            id_len = buf.len() - from;
            buf.push_str(" view");
        })?;
        if result != Ok(Ingested::Counted) {
            return run.expect("the result", result, Ok::<_, LineError>(Ingested::Counted));
        }
        ring[slot] = need(id_len);
        run.need_now += ring[slot];
        run.peak = run.peak.max(run.need_now);
    }
    run.expect("users_in_window()", run.tracker.users_in_window(), WINDOW as usize)
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
            "Edge cases: the event at exactly T−W is out of the window, and nothing is out while T < W; k bounds the answer (k up to usize::MAX); users whose events all left are not listed; window 1; timestamps 0 and near u64::MAX, windows up to u64::MAX, huge gaps.",
            |make| edge_scenarios().iter().try_for_each(|(c, lines)| replay_on(make, c, lines))),
        case(L1, "user_ids",
            "User ids are exact strings: case-sensitive (`Alice`, `alice` and `ALICE` are three users), any Unicode, no normalisation; ties go by byte order (`B` < `a`, `user10` < `user9`).",
            |make| user_id_scenarios().iter().try_for_each(|(c, lines)| replay_on(make, c, lines))),
        case(L2, "short_sequences",
            "Every short stream in any order: an older event still inside the window is counted (it does not move T); one at or before T−W is late: dropped and counted in late_events.",
            |make| exhaustive(&[config(3, 2)], |_| short_letters(true), 5, users_in_first_use_order, |c, lines| replay_on(make, c, lines))),
        case(L2, "random_sequences",
            "Longer random streams: jittered timestamps from 0, 10^6 or near u64::MAX, jumps to u64::MAX, windows 1 to u64::MAX, k 1-4 or usize::MAX, user ids of every kind, separators of every kind, some malformed lines.",
            |make| random(random_lines(), Budget::default(), |(c, lines)| replay_on(make, c, lines))),
        case(L2, "long_streams",
            "Streams of 5,000 lines read back after every line: housekeeping (pruning every N events, compacting) must never show in top(), late_events or users_in_window.",
            |make| long_streams().iter().try_for_each(|(name, c, lines)| replay_long(make, c, name, lines))),
        case(L3, "malformed_lines",
            "Malformed lines (empty, bad or out-of-range timestamp, missing or extra fields) return LineError with the 1-based number of the line \
             (every line counts, bad ones too) and change nothing: parse fully before touching any state. Only ASCII whitespace separates fields. \
             parse_line does the parsing for you.",
            |make| malformed_scenarios().iter().try_for_each(|(c, lines)| replay_on(make, c, lines))),
        case(L4, "memory_follows_window",
            "60,000 distinct users through a window of 500 events, then 20,000 late and 20,000 malformed lines, on the real heap after every line: \
             drop events (or buckets) as they leave the window, forget users whose count reaches 0, keep nothing of late or malformed lines.",
            memory_follows_window),
        case(L4, "sparse_buckets",
            "One event per timestamp over a window of 1,000: the heap bound (HEAP_PER_EVENT per event in the window) holds for per-timestamp buckets too.",
            memory_of_sparse_buckets),
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
    fn grammar_separates_on_ascii_whitespace_only() {
        assert_eq!(parse_line("+7 a b").map(|e| e.timestamp), Ok(7), "u64::from_str takes a leading +");
        assert_eq!(parse_line("\x0C7\x0Ca\x0Cb\r\n").map(|e| e.user), Ok("a"));
        assert_eq!(parse_line("7 a\u{A0}b view").map(|e| e.user), Ok("a\u{A0}b"));
        assert_eq!(parse_line("7 a\u{B}b view").map(|e| e.user), Ok("a\u{B}b"));
        assert_eq!(parse_line("7 ann\u{A0}view"), Err(Malformed::MissingAction));
        assert!(matches!(parse_line("\u{FF17} a b"), Err(Malformed::BadTimestamp { .. })));
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

    #[test]
    fn ids_that_look_alike_are_shown_apart() {
        assert_eq!(show_id("ann"), "ann");
        assert_eq!(show_id("a\u{A0}b"), "\"a\\u{a0}b\"");
        assert_eq!(show_id("e\u{301}"), "\"e\\u{301}\"");
        assert_eq!(show_id("日本"), "\"日本\"");
    }

    /// The model behind the tracker interface, with the line rewritten first.
    struct Rewriting(Model, fn(&str) -> String);

    impl ErasedTopK for Rewriting {
        fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError> {
            self.0.ingest(&(self.1)(line))
        }
        fn top(&self) -> Vec<(String, u64)> {
            self.0.top()
        }
        fn late_events(&self) -> u64 {
            self.0.late
        }
        fn users_in_window(&self) -> usize {
            self.0.counts().len()
        }
    }

    fn hint_for(make: Factory, config: &TopKConfig, lines: &[Line]) -> String {
        match replay_on(make, config, lines) {
            Err(CaseError::Failed(report)) => crate::suite::split_hint(&report).1.unwrap_or_default().to_string(),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_case_folding_tracker_is_told_about_case_not_malformed_lines() {
        let folding: Factory = |c| Box::new(Rewriting(TopKSpec::model(&c), str::to_lowercase));
        let (config, lines) = &user_id_scenarios()[0];
        let hint = hint_for(folding, config, lines);
        assert!(hint.contains("case-sensitive"), "{hint}");
        assert!(!hint.contains("malformed"), "{hint}");
    }

    #[test]
    fn a_tracker_splitting_on_unicode_spaces_is_told_so() {
        let splitting: Factory = |c| Box::new(Rewriting(TopKSpec::model(&c), |l| l.replace('\u{A0}', " ")));
        let (config, lines) = &malformed_scenarios()[4];
        let hint = hint_for(splitting, config, lines);
        assert!(hint.contains("only ASCII whitespace separates fields"), "{hint}");
    }

    #[test]
    fn the_model_passes_every_scenario() {
        let make: Factory = |c| Box::new(Rewriting(TopKSpec::model(&c), |l| l.into()));
        for (c, lines) in edge_scenarios().iter().chain(&user_id_scenarios()).chain(&malformed_scenarios()) {
            assert_eq!(replay_on(make, c, lines), Ok(()));
        }
    }

    #[test]
    fn long_streams_cross_thresholds_and_stay_in_range() {
        for (name, _, lines) in long_streams() {
            assert!(lines.len() >= LONG_STREAM / 2, "{name}");
            let late = lines.iter().filter(|l| parse_line(&l.0).is_err()).count();
            assert!(late > 0, "{name}: some malformed lines");
        }
    }
}
