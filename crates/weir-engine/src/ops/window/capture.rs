//! A sliding window's capture for a checkpoint, spread over the batches
//! after the barrier instead of stalling the pipeline at it.
//!
//! At the barrier the window only notes which groups are written whole
//! and how many keys it has; it visits nothing. It then walks its keys in
//! slot order a budget at a time after each batch, writing each one the
//! checkpoint needs (changed since the last capture, or in a group written
//! whole); and a batch about to change a key the walk has not reached
//! writes that key first. Every key is stamped with the capture that
//! visited it, so none is written twice, and keys created after the
//! barrier are stamped at birth and left out. A key's bytes therefore show
//! its state at the barrier (copy-on-write at key granularity) while the
//! pipeline goes on, and the barrier costs the same whatever the number of
//! keys. Nothing else changes the state while a capture is under way: the
//! periodic sweep of expired keys, which moves keys between slots, waits
//! for it to finish.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::state::{part_buffer, GroupParts};

/// A capture under way.
pub(super) struct Pending {
    /// The stamp of this capture.
    pub epoch: u32,
    /// Per key group: written whole (true) or as changes.
    pub whole: Vec<bool>,
    pub parts: GroupParts,
    pub deltas: GroupParts,
    /// The next slot the walk visits.
    pub cursor: usize,
    /// The number of keys at the barrier: the walk ends there.
    pub end: usize,
    /// The longest the writing held the window up at once.
    pub longest: Duration,
    /// What each part took in the previous capture.
    last: PartSizes,
    /// What a whole part took there on average, for groups not written
    /// whole then.
    whole_average: Option<usize>,
}

/// Bytes a group's part took in the previous capture, to size its buffer
/// in the next: (whole, group) → bytes.
pub(super) type PartSizes = HashMap<(bool, u32), usize>;

impl Pending {
    /// A capture of `end` keys stamped `epoch`, its buffers sized from
    /// what the previous capture's parts took (`last`).
    pub fn new(epoch: u32, whole: Vec<bool>, end: usize, last: PartSizes) -> Self {
        let wholes: Vec<usize> = last
            .iter()
            .filter(|((w, _), _)| *w)
            .map(|(_, &n)| n)
            .collect();
        let whole_average =
            (!wholes.is_empty()).then(|| wholes.iter().sum::<usize>() / wholes.len());
        Pending {
            epoch,
            whole,
            parts: GroupParts::new(),
            deltas: GroupParts::new(),
            cursor: 0,
            end,
            longest: Duration::ZERO,
            last,
            whole_average,
        }
    }

    /// Group `g`'s buffer for whole parts or deltas, started with
    /// `header`, sized (recycled where possible) to what the group took
    /// last time or, for a group written whole that was not last time,
    /// what a whole group took on average. Growing it by doubling instead
    /// would copy it, and fault in fresh memory, inside a stretch of the
    /// pipeline's time.
    pub fn part(&mut self, whole: bool, g: u32, header: u8) -> &mut Vec<u8> {
        let guess =
            self.last
                .get(&(whole, g))
                .copied()
                .or(if whole { self.whole_average } else { None });
        let into = if whole {
            &mut self.parts
        } else {
            &mut self.deltas
        };
        into.entry(g).or_insert_with(|| {
            // A little over, so a group a bit larger than last time fits.
            let bytes = guess.map_or(4096, |n| n + n / 8);
            let mut buf = part_buffer(bytes);
            buf.push(header);
            buf
        })
    }

    /// Notes a stretch of writing that began at `began`.
    pub fn held(&mut self, began: Instant) {
        self.longest = self.longest.max(began.elapsed());
    }

    /// The bytes of each part written, for sizing the next capture's.
    pub fn sizes(&self) -> PartSizes {
        let whole = self.parts.iter().map(|(&g, p)| ((true, g), p.len()));
        let deltas = self.deltas.iter().map(|(&g, p)| ((false, g), p.len()));
        whole.chain(deltas).collect()
    }
}
