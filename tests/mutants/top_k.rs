//! Buggy top-K trackers that the suite must reject: one plain tracker (every event
//! in a `Vec`, counts recomputed on demand) with every bug a named switch.

use std::collections::HashMap;

use harness::top_k::{parse_line, Ingested, LineError, Malformed, SlidingTopK, TopKConfig};

pub const NONE: u8 = 0;
pub const WINDOW_START_INCLUSIVE: u8 = 1;
pub const TIES_BY_ARRIVAL: u8 = 2;
pub const LATE_NOT_COUNTED: u8 = 3;
pub const LATE_EVENTS_KEPT: u8 = 4;
pub const OUT_OF_ORDER_DROPPED: u8 = 5;
pub const BAD_LINE_MOVES_TIME: u8 = 6;
pub const LINE_NUMBERS_SKIP_ERRORS: u8 = 7;
pub const EXTRA_FIELDS_ACCEPTED: u8 = 8;
pub const NEVER_FORGETS_EVENTS: u8 = 9;
pub const IGNORES_K: u8 = 10;

pub struct Flawed<const BUG: u8> {
    config: TopKConfig,
    lines: u64,
    good_lines: u64,
    stream_time: Option<u64>,
    late: u64,
    /// (timestamp, user, arrival order); with NEVER_FORGETS_EVENTS, old ones stay here.
    events: Vec<(u64, String, u64)>,
}

impl<const BUG: u8> Flawed<BUG> {
    fn in_window(&self, ts: u64) -> bool {
        match self.stream_time.and_then(|t| t.checked_sub(self.config.window())) {
            None => true,
            Some(start) if BUG == WINDOW_START_INCLUSIVE => ts >= start,
            Some(start) => ts > start,
        }
    }

    fn counts(&self) -> HashMap<&str, (u64, u64)> {
        // user → (count, first arrival)
        let mut counts: HashMap<&str, (u64, u64)> = HashMap::new();
        for (ts, user, arrival) in &self.events {
            if self.in_window(*ts) {
                let entry = counts.entry(user.as_str()).or_insert((0, *arrival));
                entry.0 += 1;
            }
        }
        counts
    }
}

impl<const BUG: u8> SlidingTopK for Flawed<BUG> {
    fn new(config: TopKConfig) -> Self {
        Flawed { config, lines: 0, good_lines: 0, stream_time: None, late: 0, events: Vec::new() }
    }

    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError> {
        self.lines += 1;
        let number = if BUG == LINE_NUMBERS_SKIP_ERRORS { self.good_lines + 1 } else { self.lines };
        let (ts, user): (u64, String) = match parse_line(line) {
            Err(Malformed::ExtraFields { .. }) if BUG == EXTRA_FIELDS_ACCEPTED => {
                let mut fields = line.split_ascii_whitespace();
                let ts = fields.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                (ts, fields.next().unwrap_or("").to_string())
            }
            Ok(event) => (event.timestamp, event.user.to_string()),
            Err(kind) => {
                if BUG == BAD_LINE_MOVES_TIME {
                    if let Some(ts) = line.split_ascii_whitespace().next().and_then(|t| t.parse::<u64>().ok()) {
                        self.stream_time = Some(self.stream_time.map_or(ts, |t| t.max(ts)));
                    }
                }
                return Err(LineError { line: number, kind });
            }
        };
        self.good_lines += 1;
        let late = !self.in_window(ts) || (BUG == OUT_OF_ORDER_DROPPED && self.stream_time.is_some_and(|t| ts < t));
        if late && BUG != LATE_EVENTS_KEPT {
            if BUG != LATE_NOT_COUNTED {
                self.late += 1;
            }
            return Ok(Ingested::Late);
        }
        if !late {
            self.stream_time = Some(self.stream_time.map_or(ts, |t| t.max(ts)));
        }
        self.events.push((if late { self.stream_time.unwrap_or(ts) } else { ts }, user, self.good_lines));
        if BUG != NEVER_FORGETS_EVENTS {
            let events = std::mem::take(&mut self.events);
            self.events = events.into_iter().filter(|e| self.in_window(e.0)).collect();
        }
        Ok(Ingested::Counted)
    }

    fn top(&self) -> Vec<(String, u64)> {
        let mut ranked: Vec<(&str, (u64, u64))> = self.counts().into_iter().collect();
        if BUG == TIES_BY_ARRIVAL {
            ranked.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.1 .1.cmp(&b.1 .1)));
        } else {
            ranked.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
        }
        if BUG != IGNORES_K {
            ranked.truncate(self.config.k());
        }
        ranked.into_iter().map(|(u, (n, _))| (u.to_string(), n)).collect()
    }

    fn late_events(&self) -> u64 {
        self.late
    }

    fn users_in_window(&self) -> usize {
        self.counts().len()
    }
}
