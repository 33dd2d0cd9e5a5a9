//! The learner's and facilitator's tools around the grader: the JSON result document
//! ([`results`]), statements ([`statement`]), progress kept in `.katas/`
//! ([`progress`]), watch mode ([`watch`]), submissions to a workshop scoreboard
//! ([`submit`]) and the scoreboard itself ([`scoreboard`]).

pub mod progress;
pub mod results;
pub mod scoreboard;
pub mod statement;
pub mod submit;
pub mod watch;
