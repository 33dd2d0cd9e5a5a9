//! The learner's and facilitator's tools around the grader: the JSON result document,
//! and (in later modules) statements, progress, watch mode and the workshop scoreboard.

pub mod results;
