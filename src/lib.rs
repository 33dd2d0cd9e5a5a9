//! The learner's and facilitator's tools around the grader: the JSON result document,
//! the live workshop scoreboard, and (in later modules) statements, progress and watch mode.

pub mod results;
pub mod scoreboard;
