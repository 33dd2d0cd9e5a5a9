//! Statement: exercises/statements/top_k.md (or `cargo grade top_k --statement`).
//!
//! Read a stream of `timestamp user_id action` log lines and be ready at any moment to
//! name the K most active users of the last W time units, while events arrive out of
//! order or too late, some lines are malformed, and memory stays in proportion to the
//! window rather than to the stream.
//!
//! Implement [`SlidingTopK`] for [`TopK`]. The contract is the trait's documentation
//! in `harness/src/top_k/contract.rs`, with the line grammar (`parse_line`: use it).
//! Run `cargo grade top_k` to see where you stand.

use harness::top_k::{Ingested, LineError, SlidingTopK, TopKConfig};

/// Your tracker. Replace the fields with whatever you need.
pub struct TopK {
    config: TopKConfig,
}

impl SlidingTopK for TopK {
    fn new(config: TopKConfig) -> Self {
        TopK { config }
    }

    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError> {
        let _ = (line, self.config);
        todo!("top_k: ingest_line")
    }

    fn top(&self) -> Vec<(String, u64)> {
        todo!("top_k: top")
    }

    fn late_events(&self) -> u64 {
        todo!("top_k: late_events")
    }

    fn users_in_window(&self) -> usize {
        todo!("top_k: users_in_window")
    }
}
