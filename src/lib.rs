//! The learner's and facilitator's tools around the grader: the JSON result document
//! ([`results`]), statements ([`statement`]), progress kept in `.katas/`
//! ([`progress`]), watch mode ([`watch`]) and submissions to a workshop scoreboard
//! ([`submit`]).

pub mod progress;
pub mod results;
pub mod statement;
pub mod submit;
pub mod watch;
