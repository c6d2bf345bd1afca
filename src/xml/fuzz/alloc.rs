//! A counting global allocator: the system allocator, plus, on a thread
//! that asked for it with [`measure`], the live and peak bytes it holds.
//!
//! Invariant: counting costs one thread-local check per allocation on
//! threads that do not measure; nothing here allocates (the thread-locals
//! are const-initialised cells without destructors).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct CountingAlloc;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let live = LIVE.get() + delta;
            LIVE.set(live);
            if live > PEAK.get() {
                PEAK.set(live);
            }
        }
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the counting
// around it neither allocates nor touches the memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        note(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Run `f` and return, with its result, the most bytes this thread held
/// at once while it ran (beyond what it held before), or `None` when
/// [`CountingAlloc`] is not the global allocator of this binary.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Option<usize>) {
    LIVE.set(0);
    PEAK.set(0);
    TRACKING.set(true);
    let probe = std::hint::black_box(Box::new(0u64));
    drop(probe);
    let installed = PEAK.get() > 0;
    PEAK.set(0);
    LIVE.set(0);
    let out = f();
    TRACKING.set(false);
    let peak = PEAK.get().max(0) as usize;
    (out, installed.then_some(peak))
}
