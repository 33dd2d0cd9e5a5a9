//! Heap accounting for the memory levels: a counting global allocator, so a memory
//! case measures the bytes an attempt really holds instead of trusting a number the
//! attempt reports (a hidden intern pool or a never-pruned map shows up here).
//!
//! Counting is off by default, so benchmarks and front ends pay one relaxed load per
//! allocation and nothing else. The grading child turns it on first thing (see
//! [`crate::isolation`]), so every allocation a case makes is counted; a case then
//! reads [`live_bytes`] before and after, or holds a [`HeapMeter`].
//!
//! Any binary that links `harness` gets this allocator: an attempt must not declare a
//! `#[global_allocator]` of its own (the link would fail, loudly).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// Wraps the system allocator and, while [`enable`]d, keeps the live byte count.
pub struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Bytes allocated minus bytes freed while counting was on. Signed: a block allocated
/// before counting began may be freed after it.
static LIVE: AtomicIsize = AtomicIsize::new(0);

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[inline]
fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's layout unchanged; the
// counting only touches atomics and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        new
    }
}

/// Starts counting (idempotent). The grading child calls it before running a case.
pub fn enable() {
    COUNTING.store(true, Ordering::SeqCst);
}

/// Whether allocations are being counted in this process.
pub fn is_enabled() -> bool {
    COUNTING.load(Ordering::SeqCst)
}

/// Bytes allocated and not yet freed since counting began (may be negative early on).
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::SeqCst)
}

/// Heap growth since the meter was started: what a system built after [`HeapMeter::start`]
/// holds, plus whatever the test itself still holds (keep that small and fixed).
#[derive(Clone, Copy, Debug)]
pub struct HeapMeter {
    baseline: isize,
}

impl HeapMeter {
    /// Turns counting on if it was off, and takes the current live bytes as zero.
    pub fn start() -> HeapMeter {
        enable();
        HeapMeter { baseline: live_bytes() }
    }

    /// Bytes allocated since `start` and still live (zero if more was freed than allocated).
    pub fn held(&self) -> usize {
        usize::try_from(live_bytes() - self.baseline).unwrap_or(0)
    }
}

/// `bytes` for a report: `12.3 KiB`, `4.0 MiB`.
pub fn show_bytes(bytes: usize) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / (KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_sees_what_is_held_and_what_is_freed() {
        // The count is process-wide and other test threads allocate meanwhile, so hold
        // far more than they could (64 MiB) and judge with a 32 MiB margin either way.
        const HELD: usize = 64 << 20;
        let meter = HeapMeter::start();
        let held: Vec<u8> = Vec::with_capacity(HELD);
        let while_held = meter.held();
        assert!(while_held >= HELD / 2, "counted {while_held} bytes while holding {HELD}");
        drop(held);
        let after = meter.held();
        assert!(after < HELD / 2, "counted {after} bytes after freeing {HELD}");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(show_bytes(512), "512 B");
        assert_eq!(show_bytes(1536), "1.5 KiB");
        assert_eq!(show_bytes(3 << 20), "3.0 MiB");
    }
}
