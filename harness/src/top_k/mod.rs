//! Exercise: the top K most active users over a sliding window of a log stream of
//! `timestamp user_id action` lines. Semantics: `shared/spec/others.md`, restated on
//! the trait; the statement is `exercises/statements/top_k.md`.
//!
//! * `contract.rs`: the trait a learner implements ([`SlidingTopK`]), its types, the
//!   line grammar ([`parse_line`]) and the memory bound's constants;
//! * `model.rs`: the model it is graded against, and the diagnosis of a difference;
//! * `suite.rs`: the inputs, the checks and the levelled cases ([`suite()`]).
//!
//! This module holds the object-safe adapter the suite drives ([`ErasedTopK`]) and the
//! [`factory`] that builds it from an implementation.

mod contract;
mod model;
mod suite;

pub use contract::{
    parse_line, Event, Ingested, LineError, Malformed, SlidingTopK, TopKConfig, TopKConfigError, HEAP_PER_EVENT,
    HEAP_PER_ID_BYTE, HEAP_SLACK,
};
pub use model::{Line, Output};
pub use suite::{suite, EXERCISE, L1, L2, L3, L4};

/// The tracker under test, behind a trait object so the suite is compiled once.
pub trait ErasedTopK: Send {
    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError>;
    fn top(&self) -> Vec<(String, u64)>;
    fn late_events(&self) -> u64;
    fn users_in_window(&self) -> usize;
}

impl<T: SlidingTopK> ErasedTopK for T {
    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError> {
        SlidingTopK::ingest_line(self, line)
    }
    fn top(&self) -> Vec<(String, u64)> {
        SlidingTopK::top(self)
    }
    fn late_events(&self) -> u64 {
        SlidingTopK::late_events(self)
    }
    fn users_in_window(&self) -> usize {
        SlidingTopK::users_in_window(self)
    }
}

pub type Factory = fn(TopKConfig) -> Box<dyn ErasedTopK>;

pub fn factory<T: SlidingTopK + 'static>() -> Factory {
    |config| Box::new(T::new(config))
}
