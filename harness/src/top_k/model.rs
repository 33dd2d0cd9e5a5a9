//! The model a tracker is graded against (every event of the window, recounted on
//! each line), and what a failure report says about the behaviour that differed.

use std::collections::BTreeMap;
use std::fmt;

use super::contract::{parse_line, Ingested, LineError, TopKConfig};
use crate::sequential::Spec;
use crate::suite::{with_hint, CaseError};

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(super) struct Model {
    config: TopKConfig,
    lines: u64,
    stream_time: Option<u64>,
    /// (timestamp, user) of every event in the window.
    events: Vec<(u64, String)>,
    pub(super) late: u64,
}

impl Model {
    fn window_start(&self) -> Option<u64> {
        // Events with timestamp ≤ start are out; None = nothing is out yet.
        self.stream_time.and_then(|t| t.checked_sub(self.config.window()))
    }

    pub(super) fn ingest(&mut self, line: &str) -> Result<Ingested, LineError> {
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

    pub(super) fn counts(&self) -> BTreeMap<&str, u64> {
        let mut counts = BTreeMap::new();
        for (_, user) in &self.events {
            *counts.entry(user.as_str()).or_insert(0) += 1;
        }
        counts
    }

    pub(super) fn top(&self) -> Vec<(String, u64)> {
        let mut ranked: Vec<(String, u64)> = self.counts().into_iter().map(|(u, c)| (u.to_string(), c)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(self.config.k());
        ranked
    }
}

/// One line fed in, and everything observable right after it.
#[derive(Clone, PartialEq, Eq)]
pub struct Output {
    pub(super) result: Result<Ingested, LineError>,
    pub(super) top: Vec<(String, u64)>,
    pub(super) late: u64,
    pub(super) users: usize,
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

pub(super) struct TopKSpec;

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

// ---------------------------------------------------------------------------------
// What differs: a report names the behaviour, whichever case caught it
// ---------------------------------------------------------------------------------

/// The step a replay is at: enough to say which behaviour a difference belongs to.
pub(super) struct Watch {
    pub(super) model: Model,
    /// Stream time before the current line.
    pub(super) time_before: Option<u64>,
    pub(super) line: Option<Line>,
    pub(super) expected: Option<Output>,
    pub(super) actual: Option<Output>,
    /// The call in progress on the tracker.
    pub(super) call: &'static str,
}

impl Watch {
    pub(super) fn new(config: &TopKConfig) -> Self {
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
    pub(super) fn before(&mut self, line: &Line) {
        self.time_before = self.model.stream_time;
        self.line = Some(line.clone());
        self.expected = Some(TopKSpec::step(&mut self.model, line));
        self.actual = None;
    }
}

/// Adds, to a failure report, the behaviour that differed at its last step.
pub(super) fn explain(error: CaseError, watch: &Watch) -> CaseError {
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
    let (w, k) = (config.window(), config.k());
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
                "top() panicked with k = {k} (usize::MAX): any k from 1 to usize::MAX is valid, and k only bounds \
                 the length of the answer (here: every user in the window)."
            );
        }
        if report.contains("overflow") && watch.call == "ingest_line" {
            return format!(
                "arithmetic overflowed on {line:?} ({}). Timestamps span 0..=u64::MAX and W reaches u64::MAX: \
                 T − W may not exist and ts + W may not fit, yet every such line has a defined answer.",
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
             window, not a count."
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
                    before `é`), with nothing folded or normalised.";
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top_k::contract::Malformed;
    use crate::top_k::suite::{config, line};

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
    fn ids_that_look_alike_are_shown_apart() {
        assert_eq!(show_id("ann"), "ann");
        assert_eq!(show_id("a\u{A0}b"), "\"a\\u{a0}b\"");
        assert_eq!(show_id("e\u{301}"), "\"e\\u{301}\"");
        assert_eq!(show_id("日本"), "\"日本\"");
    }

    /// The worked example of `exercises/statements/top_k.md`, line by line: the
    /// statement and the model agree.
    #[test]
    fn model_agrees_with_the_statements_worked_example() {
        let mut model = TopKSpec::model(&config(10, 2));
        let mut step = |text| TopKSpec::step(&mut model, &line(text));
        let users = |list: &[(&str, u64)]| list.iter().map(|&(u, n)| (u.to_string(), n)).collect::<Vec<_>>();
        for text in ["100 alice view", "95 bob buy"] {
            assert_eq!(step(text).result, Ok(Ingested::Counted), "{text}");
        }
        let out = step("101 bob view");
        assert_eq!((out.result, out.top), (Ok(Ingested::Counted), users(&[("bob", 2), ("alice", 1)])));
        assert_eq!(step("91 carol view").result, Ok(Ingested::Late));
        let out = step("105 Alice view");
        assert_eq!(out.result, Ok(Ingested::Counted));
        assert_eq!((out.top, out.users, out.late), (users(&[("Alice", 1), ("alice", 1)]), 3, 1));
        let out = step("106 dave");
        assert_eq!(out.result.map_err(|e| e.to_string()), Err("line 6: missing action".to_string()));
    }
}
