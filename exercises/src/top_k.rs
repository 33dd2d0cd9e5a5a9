//! Exercise: the top K most active users over a sliding window of a log stream.
//!
//! Implement [`SlidingTopK`] for [`TopK`]. The full contract is on the trait in
//! `harness/src/top_k.rs`; in short:
//! * lines are `timestamp user_id action` (use `harness::top_k::parse_line`); user ids
//!   are exact strings (case-sensitive, any Unicode);
//! * stream time T is the largest timestamp seen; the window is (T−W, T];
//! * out-of-order events inside the window count; events at or before T−W are late:
//!   dropped and counted;
//! * `top()` ranks by count descending, then user id ascending, at most k;
//! * a malformed line is an error naming its line number and changes nothing;
//! * memory follows the window, measured on the real heap after every line: forget
//!   users once all their events have left it, keep nothing of late or bad lines.
//!
//! Levels: L1 window, L2 out of order, L3 malformed input, L4 memory. Run `cargo grade`.

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
