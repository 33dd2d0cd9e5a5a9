//! A submission (`POST /api/submissions`): the body, its validation, and the typed
//! errors it can be refused with, each mapped to an HTTP status and a message a
//! learner can act on.
//!
//! Checks run from cheapest to most specific, and the workshop code comes before
//! anything about the result: a stranger learns nothing but "wrong code".

use axum::http::StatusCode;
use serde::Deserialize;

use super::{Catalog, MAX_BODY_BYTES, MAX_NAME_CHARS};
use crate::results::{GradeResult, Target, SCHEMA, VERSION};

/// The body: `{"workshop": "<code>", "learner": "<name>", "result": <GradeResult>}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    workshop: String,
    learner: String,
    /// Kept as a tree first, to report a foreign schema or version as such rather than
    /// as whichever field happens not to match.
    result: serde_json::Value,
}

/// A validated submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    /// Trimmed.
    pub learner: String,
    pub result: GradeResult,
}

/// Why a submission was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// 403: the workshop code does not match this board's.
    WrongCode,
    /// 400: not JSON, or not the submission's shape.
    Malformed(String),
    /// 400: a result document of another schema or version.
    UnsupportedResult(String),
    /// 400: a result of `cargo grade --reference`: the board is about learners.
    NotAnAttempt,
    /// 400: the learner name breaks the naming rules (see [`validate_name`]).
    InvalidName(String),
    /// 400: a well-formed result that contradicts the grader's exercises (a level
    /// beyond the last, say).
    InvalidResult(String),
    /// 413: the body exceeds [`MAX_BODY_BYTES`].
    TooLarge,
    /// 415: not `Content-Type: application/json`.
    WrongContentType,
    /// 500: the database failed; the submission was not stored.
    Storage(String),
}

impl SubmitError {
    pub fn status(&self) -> StatusCode {
        match self {
            SubmitError::WrongCode => StatusCode::FORBIDDEN,
            SubmitError::Malformed(_)
            | SubmitError::UnsupportedResult(_)
            | SubmitError::NotAnAttempt
            | SubmitError::InvalidName(_)
            | SubmitError::InvalidResult(_) => StatusCode::BAD_REQUEST,
            SubmitError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            SubmitError::WrongContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            SubmitError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::WrongCode => write!(f, "wrong workshop code: ask your facilitator for this board's code"),
            SubmitError::Malformed(why) => write!(f, "malformed submission: {why}"),
            SubmitError::UnsupportedResult(why) => write!(f, "unsupported result document: {why}"),
            SubmitError::NotAnAttempt => {
                write!(f, "the result grades the reference solutions (target `reference`); submit your attempt")
            }
            SubmitError::InvalidName(why) => write!(f, "invalid learner name: {why}"),
            SubmitError::InvalidResult(why) => write!(f, "invalid result: {why}"),
            SubmitError::TooLarge => write!(f, "submission larger than {} KiB", MAX_BODY_BYTES / 1024),
            SubmitError::WrongContentType => write!(f, "expected Content-Type: application/json"),
            SubmitError::Storage(why) => write!(f, "the scoreboard could not store the submission: {why}"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// Parses and validates a body for the board whose code is `code`.
pub fn parse(body: &[u8], code: &str, catalog: &Catalog) -> Result<Submission, SubmitError> {
    // serde_json refuses invalid UTF-8, numbers out of range and nesting deeper than
    // 128 levels with an error, never a panic or a stack overflow.
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| SubmitError::Malformed(e.to_string()))?;
    if envelope.workshop != code {
        return Err(SubmitError::WrongCode);
    }
    let learner = validate_name(&envelope.learner)?;
    let result = parse_result(envelope.result)?;
    check_against_catalog(&result, catalog)?;
    Ok(Submission { learner, result })
}

fn parse_result(value: serde_json::Value) -> Result<GradeResult, SubmitError> {
    let schema = value.get("schema").and_then(serde_json::Value::as_str);
    let version = value.get("version").and_then(serde_json::Value::as_u64);
    if schema != Some(SCHEMA) || version != Some(u64::from(VERSION)) {
        let found = |v: Option<&serde_json::Value>| v.map_or_else(|| "missing".to_string(), |v| v.to_string());
        return Err(SubmitError::UnsupportedResult(format!(
            "expected schema \"{SCHEMA}\" version {VERSION}, got schema {} version {}",
            found(value.get("schema")),
            found(value.get("version")),
        )));
    }
    let result: GradeResult =
        serde_json::from_value(value).map_err(|e| SubmitError::Malformed(format!("result: {e}")))?;
    if result.target != Target::Attempt {
        return Err(SubmitError::NotAnAttempt);
    }
    Ok(result)
}

/// Trims `name` and checks it: 1 to [`MAX_NAME_CHARS`] characters, any script, no
/// control characters, and no bidirectional overrides or isolates (they would reorder
/// the text around the name on the board).
pub fn validate_name(name: &str) -> Result<String, SubmitError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 {
        return Err(SubmitError::InvalidName("empty".into()));
    }
    if chars > MAX_NAME_CHARS {
        return Err(SubmitError::InvalidName(format!("{chars} characters, at most {MAX_NAME_CHARS} allowed")));
    }
    let is_bidi_control =
        |c: char| matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if let Some(c) = name.chars().find(|&c| c.is_control() || is_bidi_control(c)) {
        return Err(SubmitError::InvalidName(format!("contains the control character U+{:04X}", u32::from(c))));
    }
    Ok(name.to_string())
}

/// Levels must be the grader's: a level number or a highest level passed beyond an
/// exercise's last level would put a column on the board that does not exist.
/// Exercises the board does not know (a newer checkout) are accepted and ignored.
fn check_against_catalog(result: &GradeResult, catalog: &Catalog) -> Result<(), SubmitError> {
    for exercise in &result.exercises {
        let Some(known) = catalog.exercise(&exercise.exercise) else { continue };
        let last = known.levels.last().map_or(0, |l| l.level);
        if exercise.highest_level_passed > last {
            return Err(SubmitError::InvalidResult(format!(
                "{}: highest_level_passed {} but the last level is {last}",
                exercise.exercise, exercise.highest_level_passed
            )));
        }
        if let Some(level) = exercise.levels.iter().find(|l| !known.levels.iter().any(|k| k.level == l.level)) {
            return Err(SubmitError::InvalidResult(format!("{}: no level {}", exercise.exercise, level.level)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_may_use_any_script() {
        assert_eq!(validate_name("  Zoë 山田 ").unwrap(), "Zoë 山田");
        assert_eq!(validate_name("<script>").unwrap(), "<script>");
        assert_eq!(validate_name(&"é".repeat(MAX_NAME_CHARS)).unwrap().chars().count(), MAX_NAME_CHARS);
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "   ", "a\u{0}b", "tab\there", "new\nline", "\u{202E}evil", "x\u{7f}"] {
            assert!(matches!(validate_name(bad), Err(SubmitError::InvalidName(_))), "{bad:?} accepted");
        }
        assert!(validate_name(&"a".repeat(MAX_NAME_CHARS + 1)).is_err());
    }

    #[test]
    fn hostile_bodies_are_errors_not_panics() {
        let catalog = Catalog { exercises: Vec::new() };
        let deep = "[".repeat(100_000);
        let bodies: [&[u8]; 6] = [
            b"",
            b"\xff\xfe",
            b"{\"workshop\": \"\xff\"}",
            deep.as_bytes(),
            b"{\"workshop\":\"W\",\"learner\":\"a\",\"result\":{\"schema\":\"backend-katas/grade-result\",\"version\":1e999}}",
            b"{\"workshop\":\"W\",\"learner\":\"a\",\"result\":{},\"extra\":1}",
        ];
        for body in bodies {
            assert!(matches!(parse(body, "W", &catalog), Err(SubmitError::Malformed(_))), "{body:?}");
        }
        let foreign = br#"{"workshop":"W","learner":"a","result":{"schema":"other","version":99999999999999999999}}"#;
        assert!(matches!(parse(foreign, "W", &catalog), Err(SubmitError::UnsupportedResult(_))));
        assert_eq!(parse(foreign, "X", &catalog), Err(SubmitError::WrongCode));
    }
}
