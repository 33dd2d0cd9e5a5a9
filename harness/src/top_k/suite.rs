//! The graded suite: line generators, hand-written scenarios, long streams, the
//! memory runs on the real heap, and [`suite`] with the exercise's levels.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::{self, Write as _};

use proptest::prelude::*;

use super::contract::{parse_line, Ingested, LineError, TopKConfig, HEAP_PER_EVENT, HEAP_PER_ID_BYTE, HEAP_SLACK};
use super::model::{explain, Line, Output, TopKSpec, Watch};
use super::{ErasedTopK, Factory};
use crate::heap::{show_bytes, HeapMeter};
use crate::isolation::trying;
use crate::sequential::{exhaustive, random, replay, Budget};
use crate::suite::{guarded, with_hint, Case, CaseError, CaseResult, Level, QUICK_DEADLINE as QUICK};
use crate::watchdog;

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

pub(super) fn line(text: &str) -> Line {
    Line(text.to_string())
}

pub(super) fn config(window: u64, k: usize) -> TopKConfig {
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
                 has needed at most {}, so the bound is {} (HEAP_SLACK {} + that peak): it holds more than the \
                 window's events need.",
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

    /// Feeds `{timestamp} <memory_id(n)> view`, which must be counted, and adds what it
    /// needs to the window's need (and peak); returns that need.
    fn feed_counted(&mut self, timestamp: u64, n: u64) -> Result<usize, CaseError> {
        let mut id_len = 0;
        let result = self.feed(|buf| {
            let _ = write!(buf, "{timestamp} ");
            let from = buf.len();
            memory_id(buf, n);
            id_len = buf.len() - from;
            buf.push_str(" view");
        })?;
        if result != Ok(Ingested::Counted) {
            self.expect("the result", result, Ok::<_, LineError>(Ingested::Counted))?;
        }
        let needed = need(id_len);
        self.need_now += needed;
        self.peak = self.peak.max(self.need_now);
        Ok(needed)
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

const FORGET_WHAT_LEFT: &str = "memory follows the window as it moves, whether or not top() is read: nothing held may \
     grow with events that have left the window or with users whose events have all left.";

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
            tick_need[slot] += run.feed_counted(ts, ts * PER_TICK + i)?;
        }
    }
    let in_window = (WINDOW * PER_TICK) as usize;
    run.expect("users_in_window()", run.tracker.users_in_window(), in_window)?;
    // Late events from users never seen in the window, then malformed lines: neither
    // may leave anything behind.
    run.phase = "a late event changes nothing but late_events: the memory held may not grow with late lines.";
    for n in 0..FLOOD {
        let result = run.feed(|buf| {
            let _ = write!(buf, "{} late{n} view", n % (TICKS - WINDOW));
        })?;
        if result != Ok(Ingested::Late) {
            return run.expect("the result", result, Ok::<_, LineError>(Ingested::Late));
        }
    }
    run.phase = "a malformed line changes nothing, memory included: the memory held may not grow with malformed lines.";
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
/// timestamp over a window of 1,000, users repeating, for 6,000 lines. And it holds a
/// tracker to its events, not its width: a window of 10,000 with an event every 2,500
/// (a slot per timestamp of the window would hold ~10,000 slots for 4 events).
fn memory_of_sparse_buckets(make: Factory) -> CaseResult {
    const WINDOW: u64 = 1_000;
    const LINES: u64 = 6_000;
    let mut run = MemoryRun::start(make, WINDOW, "TopK::new(window 1000, k 3), one event per timestamp")?;
    let mut ring = [0usize; WINDOW as usize];
    for ts in 0..LINES {
        // Users repeat: 1,500 names over a window of 1,000 events.
        feed_in_ring(&mut run, &mut ring, ts, ts, (ts * 7) % 1_500)?;
    }
    run.expect("users_in_window()", run.tracker.users_in_window(), WINDOW as usize)?;
    drop(run);

    const WIDE: u64 = 10_000;
    const GAP: u64 = 2_500;
    const IN_WINDOW: usize = (WIDE / GAP) as usize;
    let mut run = MemoryRun::start(make, WIDE, "TopK::new(window 10000, k 3), an event every 2,500")?;
    run.phase = WIDTH_IS_NOT_EVENTS;
    let mut ring = [0usize; IN_WINDOW];
    for i in 0..40u64 {
        feed_in_ring(&mut run, &mut ring, i, i * GAP, i % 7)?;
    }
    run.expect("users_in_window()", run.tracker.users_in_window(), IN_WINDOW)
}

/// Feeds event `i` (see [`MemoryRun::feed_counted`]) of a stream whose window holds
/// its last `ring.len()` events: the one `ring.len()` back leaves as this one comes.
/// `ring` keeps what each event in the window needs, by slot.
fn feed_in_ring(run: &mut MemoryRun<'_>, ring: &mut [usize], i: u64, timestamp: u64, n: u64) -> CaseResult {
    let slot = (i % ring.len() as u64) as usize;
    run.need_now -= ring[slot];
    ring[slot] = run.feed_counted(timestamp, n)?;
    Ok(())
}

const WIDTH_IS_NOT_EVENTS: &str =
    "memory follows the events in the window, not its width: a wide window with few events \
     needs little, so nothing may be sized by W (a slot per timestamp of the window) beyond what HEAP_SLACK covers.";

// ---------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------

pub const EXERCISE: &str = "top_k";
pub const L1: Level = Level { number: 1, name: "window" };
pub const L2: Level = Level { number: 2, name: "out_of_order" };
pub const L3: Level = Level { number: 3, name: "malformed_input" };
pub const L4: Level = Level { number: 4, name: "memory" };

pub fn suite(make: Factory) -> Vec<Case> {
    let case = |level, name, hints: [&'static str; 3], run: fn(Factory) -> CaseResult| {
        Case::new(EXERCISE, level, name, hints, QUICK, move || run(make))
    };
    vec![
        case(L1, "in_order_sequences", [
            "Events in timestamp order: top() lists the users with the most events among those with T − W < timestamp ≤ T \
             (T the largest timestamp so far), count descending, ties by user id ascending, at most k. Every short \
             in-order stream over 3 users, window 3, k 1-2 is tried.",
            "A sliding window has a moving boundary: each new largest timestamp can push older events out, so a count \
             is the number of a user's events still inside, not the number ever seen. The window is half open: the \
             instant T − W itself is already outside.",
            "A queue of (timestamp, user) plus a HashMap of counts: on each event, pop from the front while its timestamp \
             ≤ T − W and decrement those users; for top(), sort the (user, count) pairs by count descending then id and \
             take k, or keep a min-heap of size k.",
        ], |make| {
                let in_order = |lines: &[Line]| {
                    users_in_first_use_order(lines)
                        && lines.windows(2).all(|w| parse_line(&w[0].0).ok().map(|e| e.timestamp) <= parse_line(&w[1].0).ok().map(|e| e.timestamp))
                };
                exhaustive(&[config(3, 1), config(3, 2)], |_| short_letters(false), 5, in_order, |c, lines| replay_on(make, c, lines))
            }),
        case(L1, "edges", [
            "Edge cases: the event at exactly T − W is out and nothing is out while T < W; k bounds the answer (up to \
             usize::MAX); users whose events all left are not listed; window 1; timestamps 0 and near u64::MAX, windows \
             up to u64::MAX, huge gaps.",
            "The edges of the domain: T − W does not exist while T < W, a timestamp plus W may not fit in a u64, and k is \
             a bound on the answer, not a size to prepare. A user whose count falls to 0 has left the ranking.",
            "Compute the window's start as T.checked_sub(W) (None: nothing has left) and never add W to a timestamp; \
             truncate the ranking with take(k) instead of allocating k slots; remove a user from the counts when its \
             count reaches 0.",
        ], |make| edge_scenarios().iter().try_for_each(|(c, lines)| replay_on(make, c, lines))),
        case(L1, "user_ids", [
            "User ids are exact strings: case-sensitive (`Alice`, `alice` and `ALICE` are three users), any Unicode, no \
             normalisation; ties go by byte order (`B` < `a`, `user10` < `user9`).",
            "Identity is byte equality and order is byte order: anything that folds case, trims, normalises Unicode or \
             compares \"naturally\" (as numbers, by locale) merges or reorders users that the contract keeps apart.",
            "Key the counts by the id exactly as parse_line returns it, and break ties with str's own Ord (byte order); \
             no to_lowercase, trim, normalisation or natural sort.",
        ], |make| user_id_scenarios().iter().try_for_each(|(c, lines)| replay_on(make, c, lines))),
        case(L2, "short_sequences", [
            "Every short stream in any order: an older event still inside the window is counted and does not move T; an \
             event at or before T − W is late: dropped, counted in late_events, T unchanged.",
            "Arrival order and event time differ: the window is defined by event time (the largest seen so far), so an \
             event can arrive after newer ones and still belong; only events at or before the window's start are turned \
             away.",
            "Keep the window's events ordered by timestamp, not by arrival (a BTreeMap from timestamp to the users seen \
             at it, or a bucket per timestamp); an event newer than T advances T and evicts from the oldest end; a late \
             one only increments a counter.",
        ], |make| exhaustive(&[config(3, 2)], |_| short_letters(true), 5, users_in_first_use_order, |c, lines| replay_on(make, c, lines))),
        case(L2, "random_sequences", [
            "Longer random streams: jittered timestamps from 0, 10^6 or near u64::MAX, jumps to u64::MAX, windows from 1 \
             to u64::MAX, k 1-4 or usize::MAX, user ids and separators of every kind, some malformed lines.",
            "Every rule at once: out-of-order arrival, arithmetic at the top of the timestamp range, an unbounded k, exact \
             ids, rejected lines. A failure here is usually one rule of a smaller case meeting a combination that case \
             did not try; the nudge under the counterexample names the rule.",
            "Cut the counterexample down by hand to the few lines that matter, then look at the code path of the rule the \
             nudge names: arithmetic on T and W (checked_sub, no additions), ordering by timestamp, the tie-break on ids.",
        ], |make| random(random_lines(), Budget::default(), |(c, lines)| replay_on(make, c, lines))),
        case(L2, "long_streams", [
            "Streams of thousands of lines, read back after every line: top(), late_events and users_in_window stay exact \
             however long the stream runs.",
            "Housekeeping that runs now and then (pruning every N events, compacting) must leave exactly the state the \
             definition describes, and every answer must already reflect it; here thresholds are crossed many times, \
             jumps that empty the window included.",
            "Evict on every ingest (while the oldest timestamp ≤ T − W) rather than in batches, or run a pending batch \
             before answering; take users_in_window from the number of users with a non-zero count.",
        ], |make| long_streams().iter().try_for_each(|(name, c, lines)| replay_long(make, c, name, lines))),
        case(L3, "malformed_lines", [
            "A malformed line (empty, bad or out-of-range timestamp, missing or extra fields) returns LineError with its \
             1-based line number, every line given counting, and changes nothing else. Only ASCII whitespace separates \
             fields; parse_line is the grammar.",
            "Validation is all or nothing: a line is judged whole before it has any effect, and the line number is the \
             only thing a rejected line moves. One grammar, used as is, cannot disagree with the contract on Unicode \
             spaces or a leading `+`.",
            "Count the line first, call parse_line, and on Err(kind) return LineError { line, kind } before touching T, \
             the window or the counts.",
        ], |make| malformed_scenarios().iter().try_for_each(|(c, lines)| replay_on(make, c, lines))),
        case(L4, "memory_follows_window", [
            "Many more distinct users over the stream than the window ever holds, then floods of late and of malformed \
             lines, with the heap measured after every line: what the tracker holds follows the window (the bound on \
             SlidingTopK), whether or not top() is ever read.",
            "A stream is unbounded, a window is not: any state that only grows (per user ever seen, per line, per late \
             event) ends up beyond what the window needs. Spare capacity kept from a busier moment is allowed.",
            "Drop events (or buckets) as they leave the window, on ingest; remove a user from every map and ranking when \
             its count reaches 0; keep only counters for late and malformed lines; no intern pool of every id seen.",
        ], memory_follows_window),
        case(L4, "sparse_buckets", [
            "One event per timestamp over a wide window, then a few events far apart in a window of 10,000: the memory \
             bound (HEAP_PER_EVENT for each event in the window, plus HEAP_PER_ID_BYTE per byte of its id) holds when \
             every timestamp carries a single event, and when most of the window's timestamps carry none.",
            "Fixed costs multiply: a structure whose overhead is paid per distinct timestamp pays it once per event when \
             every timestamp is distinct, and one sized by the window's width (a slot per timestamp) pays for \
             timestamps that have no event.",
            "Per-timestamp buckets fit if each one is small (a BTreeMap<u64, Vec<..>>, or a VecDeque of (timestamp, user) \
             with counts beside it); avoid a pre-sized Vec or a HashMap per timestamp, whose empty capacity alone can \
             exceed the allowance, and a ring of W slots unless W is small enough for it to fit in HEAP_SLACK.",
        ], memory_of_sparse_buckets),
    ]
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequential::Spec;
    use crate::top_k::model::Model;

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
