//! The heap allocator of the Culex binaries: the system allocator, which
//! also counts the bytes it holds once [`start_counting`] was called
//! (`memory_limit`), so that the broker can tell how much heap the process
//! uses ([`in_use`]). Until then an allocation costs one relaxed load more.
//!
//! Install it in a binary with
//! `#[global_allocator] static HEAP: culex_heap::CountingHeap = culex_heap::CountingHeap;`.
//!
//! What was allocated before counting started and freed after is
//! subtracted too, so the count can go below the truth by that much; it
//! never goes below zero ([`in_use`] clamps).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// Bytes held (allocated and not freed) since counting started.
static HELD: AtomicIsize = AtomicIsize::new(0);
/// Counting is on.
static COUNTING: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting (see the crate's documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingHeap;

/// Starts counting the bytes held.
pub fn start_counting() {
    COUNTING.store(true, Ordering::Relaxed);
}

/// Heap bytes held by the process since counting started (0 before).
pub fn in_use() -> usize {
    usize::try_from(HELD.load(Ordering::Relaxed)).unwrap_or(0)
}

fn count(bytes: usize, sign: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        // A size fits isize: allocations are at most isize::MAX bytes.
        HELD.fetch_add(sign * bytes as isize, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to `System` unchanged, which upholds
// `GlobalAlloc`'s contract; the counting touches only atomics.
unsafe impl GlobalAlloc for CountingHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees for `layout` are passed on.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size(), 1);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size(), 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator, that is by
        // `System`, with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        count(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and `new_size` as the caller guarantees.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(layout.size(), -1);
            count(new_size, 1);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static HEAP: CountingHeap = CountingHeap;

    /// One test: the count is global to the process.
    #[test]
    fn held_bytes_follow_allocations_once_counting_started() {
        let before = vec![0u8; 1 << 20];
        assert_eq!(in_use(), 0, "nothing is counted before counting starts");
        start_counting();
        let base = in_use();
        let block = vec![1u8; 4 << 20];
        let grown = in_use();
        assert!(grown >= base + (4 << 20), "{grown} after a 4 MiB block, {base} before");
        let mut growing: Vec<u8> = Vec::with_capacity(1 << 20);
        growing.resize(3 << 20, 2);
        assert!(in_use() >= grown + (3 << 20), "a reallocation counts its new size");
        drop((block, growing));
        assert!(in_use() < grown, "freed blocks are subtracted");
        // Freed after counting started, allocated before: never below 0.
        drop(before);
        let _ = in_use();
    }
}
