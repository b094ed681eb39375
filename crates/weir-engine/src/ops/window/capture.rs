//! A sliding window's capture for a checkpoint, spread over the batches
//! after the barrier instead of stalling the pipeline at it.
//!
//! At the barrier the window only marks the keys the checkpoint must
//! write (changed since the last capture, or in a group written whole)
//! and queues their slots. It then writes them a budget at a time after
//! each batch; and a batch that is about to change a marked key writes
//! that key first. A key's bytes therefore always show its state at the
//! barrier — a copy-on-write at key granularity — while the pipeline
//! goes on. Nothing else changes the state while a capture is under way:
//! the periodic sweep of expired keys waits for it to finish.

use std::time::{Duration, Instant};

use crate::state::{part_buffer, GroupParts};

/// A capture under way.
pub(super) struct Pending {
    /// Per key group: written whole (true) or as changes.
    pub whole: Vec<bool>,
    pub parts: GroupParts,
    pub deltas: GroupParts,
    /// Slots of the marked keys, in the order they are written unless a
    /// batch touches one first.
    pub queue: Vec<u32>,
    /// The next entry of `queue` to write.
    pub next: usize,
    /// The longest the writing held the window up at once.
    pub longest: Duration,
}

impl Pending {
    /// A capture with each group's buffer reserved to the bytes it will
    /// take (`sizes`: group, whole, bytes), recycled where possible.
    pub fn new(
        key_groups: u32,
        whole: Vec<bool>,
        sizes: impl IntoIterator<Item = ((bool, u32), usize)>,
        queue: Vec<u32>,
    ) -> Self {
        debug_assert_eq!(whole.len(), key_groups as usize);
        let (mut parts, mut deltas) = (GroupParts::new(), GroupParts::new());
        for ((is_whole, g), size) in sizes {
            let into = if is_whole { &mut parts } else { &mut deltas };
            into.entry(g)
                .or_insert_with(|| part_buffer(size))
                .reserve_exact(size);
        }
        Pending {
            whole,
            parts,
            deltas,
            queue,
            next: 0,
            longest: Duration::ZERO,
        }
    }

    /// Notes a stretch of writing that began at `began`.
    pub fn held(&mut self, began: Instant) {
        self.longest = self.longest.max(began.elapsed());
    }
}
