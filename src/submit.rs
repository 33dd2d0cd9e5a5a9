//! `cargo grade --submit URL --name NAME --code WORKSHOP`: posts the run's result
//! document to the workshop scoreboard. A dead or refusing server is a warning, never
//! a failed grading: the learner's loop must not depend on the facilitator's laptop.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::results::GradeResult;

/// The scoreboard's submission endpoint, under the URL the facilitator shares.
pub const SUBMISSIONS_PATH: &str = "/api/submissions";
/// How long a submission may take before it is given up (grading has already finished).
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The body of `POST /api/submissions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// The workshop code the facilitator started the board with.
    pub workshop: String,
    /// The learner's display name.
    pub learner: String,
    pub result: GradeResult,
}

/// Why a submission did not go through.
#[derive(Debug)]
pub enum SubmitError {
    /// The URL is not an `http://` URL.
    BadUrl(String),
    /// No answer: the server is down, unreachable or too slow.
    Unreachable(String),
    /// The server answered with an error status and this message.
    Refused { status: u16, message: String },
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::BadUrl(url) => write!(f, "`{url}` is not an http:// URL (e.g. http://192.168.1.20:7878)"),
            SubmitError::Unreachable(why) => write!(f, "the scoreboard did not answer: {why}"),
            SubmitError::Refused { status, message } => write!(f, "the scoreboard refused it ({status}): {message}"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// The endpoint for a URL as the facilitator shares it (the board's address, with or
/// without the endpoint's path).
pub fn endpoint(url: &str) -> Result<String, SubmitError> {
    let url = url.trim().trim_end_matches('/');
    if !url.starts_with("http://") || url.len() <= "http://".len() {
        return Err(SubmitError::BadUrl(url.to_string()));
    }
    Ok(if url.ends_with(SUBMISSIONS_PATH) { url.to_string() } else { format!("{url}{SUBMISSIONS_PATH}") })
}

/// Posts `submission` to the board at `url`.
pub fn submit(url: &str, submission: &Submission) -> Result<(), SubmitError> {
    let endpoint = endpoint(url)?;
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(TIMEOUT)).http_status_as_error(false).build().into();
    let mut response =
        agent.post(&endpoint).send_json(submission).map_err(|e| SubmitError::Unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    // The board answers errors as {"error": "..."}; anything else is shown as it came.
    let body = response.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or(body);
    Err(SubmitError::Refused { status, message })
}

/// What a verdict is, for "did it change": who, every level's status and every
/// case's outcome.
fn verdict_signature(submission: &Submission) -> String {
    let mut signature = format!("{}\n{}\n", submission.workshop, submission.learner);
    for exercise in &submission.result.exercises {
        for level in &exercise.levels {
            signature.push_str(&format!("{} L{} {:?}\n", exercise.exercise, level.level, level.status));
        }
        for case in &exercise.cases {
            signature.push_str(&format!("{} {:?}\n", case.id, case.outcome));
        }
    }
    signature
}

/// Submits only when the verdict differs from the last one submitted from this
/// checkout (remembered in `last`): watch mode re-grades on every save, the board
/// wants changes. Returns whether it submitted.
pub fn submit_if_changed(url: &str, submission: &Submission, last: &Path) -> Result<bool, SubmitError> {
    let signature = verdict_signature(submission);
    if std::fs::read_to_string(last).is_ok_and(|previous| previous == signature) {
        return Ok(false);
    }
    submit(url, submission)?;
    // Best effort: if it cannot be remembered, the next run submits again, harmlessly.
    if let Some(dir) = last.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(last, signature);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_the_board_address_with_or_without_the_path() {
        assert_eq!(endpoint("http://10.0.0.5:7878").unwrap(), "http://10.0.0.5:7878/api/submissions");
        assert_eq!(endpoint("http://10.0.0.5:7878/").unwrap(), "http://10.0.0.5:7878/api/submissions");
        assert_eq!(endpoint("http://h/api/submissions").unwrap(), "http://h/api/submissions");
        assert!(matches!(endpoint("https://h"), Err(SubmitError::BadUrl(_))));
        assert!(matches!(endpoint("http://"), Err(SubmitError::BadUrl(_))));
        assert!(matches!(endpoint("10.0.0.5:7878"), Err(SubmitError::BadUrl(_))));
    }

    #[test]
    fn a_dead_server_is_an_error_not_a_panic() {
        // A port nobody listens on: bind one, note it, let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let submission = Submission {
            workshop: "W".into(),
            learner: "ada".into(),
            result: crate::results::build(
                &[],
                crate::results::Target::Attempt,
                "2026-11-23T00:00:00Z".into(),
                Duration::ZERO,
                |_| 0,
                |_, _| false,
            ),
        };
        let err = submit(&format!("http://127.0.0.1:{port}"), &submission).unwrap_err();
        assert!(matches!(err, SubmitError::Unreachable(_)), "{err}");
    }
}
