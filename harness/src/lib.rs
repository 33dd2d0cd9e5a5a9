//! The grading harness: exercise contracts and the machinery that grades attempts.
//!
//! * [`clock`]: injected time (`Clock`, `SystemClock`, `ManualClock`).
//! * One module per exercise ([`ttl_lru`], [`rate_limit`], [`top_k`], [`idempotency`]):
//!   the contract trait, its model, its suite.
//! * [`suite`]: levelled cases; [`sequential`] and [`linearizability`]: the checks;
//!   [`isolation`]: one child process per case; [`report`] and [`libtest`]: front ends;
//!   [`redis_server`]: a private Redis server for the distributed levels.
//!
//! This crate never depends on `exercises` or `solutions`: suites are handed the
//! implementation to grade.

pub mod clock;
pub mod idempotency;
pub mod isolation;
pub mod libtest;
pub mod linearizability;
pub mod rate_limit;
pub mod redis_server;
pub mod report;
pub mod sequential;
pub mod suite;
pub mod top_k;
pub mod ttl_lru;

pub use suite::{Case, CaseError, CaseResult, Level};
