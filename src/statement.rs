//! Exercise statements: `exercises/statements/<exercise>.md`, the first thing a learner
//! opens. The grader reads three parts of one: the title, the summary (everything
//! between the title and the first `## ` heading, shown on a fresh stub's card) and the
//! closing "What interviewers probe next" section, which stays hidden until every level
//! of the exercise has passed.

use std::fmt;
use std::path::{Path, PathBuf};

/// The heading of the section shown only once every level passes; it must come last.
pub const PROBE_NEXT_HEADING: &str = "## What interviewers probe next";

/// A statement, split into the parts the grader shows at different times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub exercise: String,
    pub title: String,
    /// What to build, in a few sentences.
    pub summary: String,
    /// The whole statement without the probe-next section.
    pub body: String,
    /// The probe-next section's text, without its heading.
    pub probe_next: String,
}

/// Why a statement could not be read.
#[derive(Debug)]
pub enum StatementError {
    Unreadable { path: PathBuf, error: std::io::Error },
    Malformed { path: PathBuf, problem: &'static str },
}

impl fmt::Display for StatementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatementError::Unreadable { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            StatementError::Malformed { path, problem } => write!(f, "{} is malformed: {problem}", path.display()),
        }
    }
}

impl std::error::Error for StatementError {}

/// Where the statement of `exercise` lives under the workspace `root`.
pub fn path(root: &Path, exercise: &str) -> PathBuf {
    root.join("exercises").join("statements").join(format!("{exercise}.md"))
}

/// Reads and splits the statement of `exercise`.
pub fn load(root: &Path, exercise: &str) -> Result<Statement, StatementError> {
    let path = path(root, exercise);
    let text =
        std::fs::read_to_string(&path).map_err(|error| StatementError::Unreadable { path: path.clone(), error })?;
    parse(exercise, &text).map_err(|problem| StatementError::Malformed { path, problem })
}

/// Splits a statement's markdown (see the module doc for its shape).
pub fn parse(exercise: &str, text: &str) -> Result<Statement, &'static str> {
    let text = text.replace("\r\n", "\n");
    let first = text.lines().next().unwrap_or_default();
    let title = first.strip_prefix("# ").ok_or("the first line must be the title, `# ...`")?.trim().to_string();
    let after_title = &text[first.len()..];
    let summary_end = after_title.find("\n## ").ok_or("no `## ` section after the summary")?;
    let summary = after_title[..summary_end].trim().to_string();
    if summary.is_empty() {
        return Err("the summary (between the title and the first `## `) is empty");
    }
    let probe_start =
        text.find(&format!("\n{PROBE_NEXT_HEADING}\n")).ok_or("no `## What interviewers probe next` section")?;
    let probe_next = text[probe_start + 1 + PROBE_NEXT_HEADING.len()..].trim().to_string();
    if probe_next.lines().any(|line| line.starts_with("## ")) {
        return Err("`## What interviewers probe next` must be the last section");
    }
    if probe_next.is_empty() {
        return Err("`## What interviewers probe next` is empty");
    }
    let body = text[..probe_start].trim_end().to_string();
    Ok(Statement { exercise: exercise.to_string(), title, summary, body, probe_next })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str =
        "# A cache\n\nBuild a cache.\nWith TTLs.\n\n## The question\nQ?\n\n## Levels\n- **L1 lru**\n\n\
                          ## What interviewers probe next\nStriped locks.\n";

    #[test]
    fn splits_title_summary_body_and_probe_next() {
        let s = parse("ttl_lru", SAMPLE).unwrap();
        assert_eq!(s.title, "A cache");
        assert_eq!(s.summary, "Build a cache.\nWith TTLs.");
        assert!(s.body.starts_with("# A cache") && s.body.ends_with("- **L1 lru**"), "{}", s.body);
        assert!(!s.body.contains("Striped"));
        assert_eq!(s.probe_next, "Striped locks.");
    }

    #[test]
    fn malformed_statements_are_refused_with_a_reason() {
        assert!(parse("x", "no title\n## a\n").is_err());
        assert!(parse("x", "# T\n\n## The question\n").unwrap_err().contains("empty"));
        assert!(parse("x", "# T\nsum\n## The question\nq\n").unwrap_err().contains("probe next"));
        let not_last = format!("# T\nsum\n{PROBE_NEXT_HEADING}\nx\n## Later\ny\n");
        assert!(parse("x", &not_last).unwrap_err().contains("last section"));
    }
}
