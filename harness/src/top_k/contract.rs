//! The contract a learner implements: [`SlidingTopK`], the types in its signatures,
//! the line grammar it must follow ([`parse_line`], given to learners) and the memory
//! bound's constants. The doc comments are the specification;
//! `exercises/statements/top_k.md` restates them in plain words.

use std::fmt;

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
    fn config_errors_are_typed() {
        assert_eq!(TopKConfig::new(0, 1), Err(TopKConfigError::ZeroWindow));
        assert_eq!(TopKConfig::new(1, 0), Err(TopKConfigError::ZeroK));
    }
}
