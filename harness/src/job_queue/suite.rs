//! Levels 1-3 of the job queue (to be written).

use super::Factory;
use crate::Case;

pub const EXERCISE: &str = "job_queue";

pub fn suite(_queue: Factory) -> Vec<Case> {
    Vec::new()
}
