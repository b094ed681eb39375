//! A cache-prefetch hint, for operators that know which per-key state the
//! rows a few places ahead will touch (see `ops::keyed::KeyedMap`).
//!
//! Per-key state is scattered over the heap, and a keyed step working
//! through a batch row by row otherwise waits on a cache miss or two per
//! row: the CPU cannot look far enough ahead on its own. The hint only
//! asks the cache to start loading a line; it never faults, whatever the
//! address, and does nothing on targets without one here.

/// Asks for the cache line holding `p` to be loaded (for reading).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it does not access memory
    // architecturally and cannot fault, whatever the address (Intel SDM,
    // "PREFETCHh"). The intrinsic is `unsafe` only because it has a
    // `target_feature` (SSE), which every x86_64 target has.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
